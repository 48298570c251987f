package org

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends the unit as encoding/json would write it (with HTML
// escaping off), without reflection: a subtree page is 500 units, and
// encoding them was most of the time of that request.
func (u *Unit) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, u.ID, 10)
	b = append(b, `,"parent_id":`...)
	if u.ParentID == nil {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, *u.ParentID, 10)
	}
	b = append(b, `,"level":`...)
	b = AppendJSONString(b, u.Level.String())
	b = append(b, `,"name":`...)
	b = AppendJSONString(b, u.Name)
	b = append(b, `,"code":`...)
	if u.Code == nil {
		b = append(b, "null"...)
	} else {
		b = AppendJSONString(b, *u.Code)
	}
	b = append(b, `,"sort_order":`...)
	b = strconv.AppendInt(b, int64(u.SortOrder), 10)
	b = append(b, `,"status":`...)
	b = AppendJSONString(b, u.Status)
	b = append(b, `,"generated":`...)
	b = strconv.AppendBool(b, u.Generated)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, u.Version, 10)
	b = append(b, `,"updated_at":"`...)
	b = u.UpdatedAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if u.Members != nil {
		b = append(b, `,"members":`...)
		b = strconv.AppendInt(b, *u.Members, 10)
	}
	return append(b, '}')
}

// AppendUnitsJSON appends a JSON array of units ([] for none).
func AppendUnitsJSON(b []byte, units []Unit) []byte {
	b = append(b, '[')
	for i := range units {
		if i > 0 {
			b = append(b, ',')
		}
		b = units[i].AppendJSON(b)
	}
	return append(b, ']')
}

// AppendJSONString appends s as a JSON string the way encoding/json does
// with HTML escaping off: quotes, backslashes and control characters
// escaped, invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029 escaped.
func AppendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
