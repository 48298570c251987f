package org

import (
	"fmt"
	"strings"
	"time"
)

// Level is a unit's depth in the tree, 1 (province) to 6 (grid).
type Level int

// The six levels.
const (
	Province Level = 1 + iota // 省
	City                      // 市
	County                    // 县/区
	Township                  // 乡/街道
	Village                   // 村/社区
	Grid                      // 网格
)

var levelNames = [...]string{"", "province", "city", "county", "township", "village", "grid"}

func (l Level) String() string {
	if l < Province || l > Grid {
		return fmt.Sprintf("level(%d)", int(l))
	}
	return levelNames[l]
}

// ParseLevel accepts a level's name or number.
func ParseLevel(s string) (Level, error) {
	for i, n := range levelNames {
		if i > 0 && (s == n || s == fmt.Sprint(i)) {
			return Level(i), nil
		}
	}
	return 0, invalid("level", "want one of province, city, county, township, village, grid")
}

// MarshalText writes the level's name.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads a level's name.
func (l *Level) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	*l = v
	return err
}

// Unit is one node of the tree.
type Unit struct {
	ID        int64     `json:"id"`
	ParentID  *int64    `json:"parent_id"`
	Level     Level     `json:"level"`
	Name      string    `json:"name"`
	Code      *string   `json:"code"`
	SortOrder int       `json:"sort_order"`
	Status    string    `json:"status"`
	Generated bool      `json:"generated"`
	Version   int64     `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
	// Members is filled by listings that count them (children).
	Members *int64 `json:"members,omitempty"`
}

// NormalizeCode turns an NBS code of 2/4/6/9/12 digits into its 12-digit
// padded form; a 15-digit grid code passes through.
func NormalizeCode(code string) (string, error) {
	code = strings.TrimSpace(code)
	for _, c := range code {
		if c < '0' || c > '9' {
			return "", invalid("code", "digits only")
		}
	}
	switch len(code) {
	case 2, 4, 6, 9, 12:
		return code + strings.Repeat("0", 12-len(code)), nil
	case 15:
		return code, nil
	}
	return "", invalid("code", "want 2, 4, 6, 9 or 12 digits (统计用区划代码), or 15 for a grid")
}

// CodeLevel is the level an NBS code of this length denotes (0 for padded
// codes, whose level cannot be told from the length).
func CodeLevel(raw string) Level {
	switch len(raw) {
	case 2:
		return Province
	case 4:
		return City
	case 6:
		return County
	case 9:
		return Township
	case 12:
		return Village
	case 15:
		return Grid
	}
	return 0
}

// validName trims and checks a unit or person name.
func validName(field, s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" || len([]rune(s)) > 100 {
		return "", invalid(field, "1-100 characters")
	}
	if strings.ContainsAny(s, "\x00\r\n\t") {
		return "", invalid(field, "no control characters")
	}
	return s, nil
}
