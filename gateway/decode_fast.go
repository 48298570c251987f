package gateway

import (
	"encoding/json"

	"github.com/zhangban/zhangban/internal/jsonlit"
	"github.com/zhangban/zhangban/messaging"
)

// decodeFast decodes, by hand, the frames a busy node reads most (every
// frame's envelope, sends and acks) when they are plain: keys exactly as
// the fields are named, each at most once, integers and strings that
// jsonlit takes, non-empty lists of integers, and data and payload that
// are JSON. It reports false, leaving v as it was, for anything
// else, which strictUnmarshal then decodes as before: the result is
// always decodeStrict's (FuzzStrictUnmarshal). encoding/json took 4-5 µs
// and 13-16 allocations for each of these frames, and was a tenth of a
// node's CPU at 10,000 direct messages/s (docs/benchmarks.md, session 16).
//
// The three loops are written out: one generic loop calling each type's
// member function through a func value sent the value and its keys to the
// heap, 15 allocations for a send instead of 7.
func decodeFast(buf []byte, v any) bool {
	m := members{buf: buf}
	if !m.start() {
		return false
	}
	switch v := v.(type) {
	case *Frame:
		var f Frame
		for m.next() {
			ok := false
			switch string(m.key) {
			case "id":
				f.ID, ok = jsonlit.String(m.val)
			case "type":
				f.Type, ok = jsonlit.String(m.val)
			case "data":
				f.Data, ok = rawValue(m.val)
			}
			if !ok {
				return false
			}
		}
		if m.ok {
			*v = f
		}
		return m.ok
	case *convSeq:
		var c convSeq
		for m.next() {
			ok := false
			switch string(m.key) {
			case "conv":
				c.Conv, ok = jsonlit.Int(m.val)
			case "seq":
				c.Seq, ok = jsonlit.Int(m.val)
			}
			if !ok {
				return false
			}
		}
		if m.ok {
			*v = c
		}
		return m.ok
	case *messaging.SendRequest:
		var r messaging.SendRequest
		for m.next() {
			ok := false
			switch string(m.key) {
			case "conv":
				r.Conv, ok = jsonlit.Int(m.val)
			case "client_id":
				r.ClientID, ok = jsonlit.String(m.val)
			case "kind":
				r.Kind, ok = jsonlit.String(m.val)
			case "text":
				r.Text, ok = jsonlit.String(m.val)
			case "mentions":
				r.Mentions, ok = intList(m.val)
			case "payload":
				r.Payload, ok = rawValue(m.val)
			}
			if !ok {
				return false
			}
		}
		if m.ok {
			*v = r
		}
		return m.ok
	}
	return false
}

// members walks the members of the JSON object in buf (space around it
// allowed): start, then next for each member, whose key and value's
// bytes are then in key and val; ok tells, once next has said false,
// whether buf was such an object, with plain (unescaped) keys, none twice.
// A value's bytes end where skipValue, which trusts its input, ends
// them: the caller must check them.
type members struct {
	buf      []byte
	i        int
	key, val []byte
	seen     [8][2]int // where the keys so far are in buf
	n        int
	done, ok bool
}

// start reports whether buf starts an object.
func (m *members) start() bool {
	i := skipSpace(m.buf, 0)
	if i >= len(m.buf) || m.buf[i] != '{' {
		return false
	}
	m.i = skipSpace(m.buf, i+1)
	if m.i < len(m.buf) && m.buf[m.i] == '}' {
		m.done, m.ok = true, skipSpace(m.buf, m.i+1) == len(m.buf)
	}
	return true
}

func (m *members) next() bool {
	if m.done {
		return false
	}
	buf, i := m.buf, m.i
	if i >= len(buf) || buf[i] != '"' {
		return m.fail()
	}
	j := i + 1
	for j < len(buf) && buf[j] != '"' {
		j++ // a key with escapes names no field: the caller refuses it
	}
	if j >= len(buf) || buf[j] != '"' || m.n == len(m.seen) {
		return m.fail()
	}
	key := buf[i+1 : j]
	for _, s := range m.seen[:m.n] {
		if string(buf[s[0]:s[1]]) == string(key) {
			return m.fail()
		}
	}
	m.seen[m.n] = [2]int{i + 1, j}
	m.n++
	i = skipSpace(buf, j+1)
	if i >= len(buf) || buf[i] != ':' {
		return m.fail()
	}
	i = skipSpace(buf, i+1)
	end := skipValue(buf, i)
	if end <= i || end > len(buf) {
		return m.fail()
	}
	m.key, m.val = key, buf[i:end]
	switch i = skipSpace(buf, end); {
	case i < len(buf) && buf[i] == ',':
		m.i = skipSpace(buf, i+1)
	case i < len(buf) && buf[i] == '}':
		m.done, m.ok = true, skipSpace(buf, i+1) == len(buf)
	default:
		return m.fail()
	}
	return true
}

func (m *members) fail() bool {
	m.done, m.ok = true, false
	return false
}

// rawValue takes one JSON value as json.RawMessage keeps it: a copy.
func rawValue(val []byte) (json.RawMessage, bool) {
	if !json.Valid(val) {
		return nil, false
	}
	return append(json.RawMessage(nil), val...), true
}

// intList takes a non-empty list of integers jsonlit takes.
func intList(val []byte) ([]int64, bool) {
	ids, rest, ok := jsonlit.CutInts(val)
	return ids, ok && len(rest) == 0
}
