package org

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// encodingJSON is what the API's writeJSON produces (HTML escaping off),
// without the trailing newline.
func encodingJSON(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func TestUnitAppendJSONMatchesEncodingJSON(t *testing.T) {
	parent, members, code := int64(7), int64(3), "330106000000"
	at := time.Date(2026, 11, 23, 11, 34, 56, 123456000, time.UTC)
	units := []Unit{
		{ID: 1, Level: Province, Name: "浙江省", Code: &code, Status: "active", Version: 9, UpdatedAt: at},
		{ID: 8, ParentID: &parent, Level: Grid, Name: "第1网格", SortOrder: -3, Status: "dissolved", Generated: true, UpdatedAt: at.In(time.FixedZone("CST", 8*3600)), Members: &members},
		{ID: 9, Level: Level(9), Name: "a\"b\\c\n\r\t\b\f\x01\x1f<>&\u2028\u2029\xff\xfe end", Status: "active"},
	}
	for _, u := range units {
		if got, want := u.AppendJSON(nil), encodingJSON(t, u); !bytes.Equal(got, want) {
			t.Errorf("AppendJSON\n got %s\nwant %s", got, want)
		}
	}
	if got, want := AppendUnitsJSON(nil, units), encodingJSON(t, units); !bytes.Equal(got, want) {
		t.Errorf("AppendUnitsJSON\n got %s\nwant %s", got, want)
	}
	if got := AppendUnitsJSON(nil, []Unit{}); string(got) != "[]" {
		t.Errorf("no units: %s", got)
	}
}

func BenchmarkUnitsJSON_500(b *testing.B) {
	parent, code := int64(7), "330106004001"
	units := make([]Unit, 500)
	for i := range units {
		units[i] = Unit{ID: int64(i), ParentID: &parent, Level: Village, Name: "曙光社区居民委员会", Code: &code, Status: "active", UpdatedAt: time.Now()}
	}
	b.Run("append", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = AppendUnitsJSON(buf[:0], units)
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		var buf bytes.Buffer
		for b.Loop() {
			buf.Reset()
			json.NewEncoder(&buf).Encode(units)
		}
	})
}
