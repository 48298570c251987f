package org

import (
	"strconv"
	"time"

	"github.com/zhangban/zhangban/internal/jsonlit"
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
// with HTML escaping off.
func AppendJSONString(b []byte, s string) []byte { return jsonlit.AppendString(b, s, false) }
