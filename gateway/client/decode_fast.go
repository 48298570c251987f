package client

import (
	"bytes"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// kindText is the kind of almost every message; decodeMessageFast uses the
// constant rather than allocating a copy.
const kindText = "text"

// decodeMessageFast decodes a message event laid out exactly as the server
// writes it, with json.Marshal of its message and no whitespace:
//
//	{"type":"message","data":{"conv":1,"seq":2,"sender":3,"client_id":"…",
//	"kind":"…","text":"…","mentions":null or [4,5],"payload":null,"at":"…"}}
//
// It reports false for anything else (other key orders, escapes in
// strings, a payload, a message without conversation or sequence, …);
// decodeFrame then decodes the line with encoding/json. What it accepts it
// decodes as encoding/json does (FuzzDecodeMessageFast checks this), in
// one pass and with two or three allocations.
func decodeMessageFast(line []byte) (*Message, bool) {
	s := eventScanner{rest: line, ok: true}
	s.expect(`{"type":"message","data":{"conv":`)
	conv := s.int()
	s.expect(`,"seq":`)
	seq := s.int()
	s.expect(`,"sender":`)
	sender := s.int()
	s.expect(`,"client_id":`)
	clientID := s.str()
	s.expect(`,"kind":`)
	kind := s.str()
	s.expect(`,"text":`)
	text := s.str()
	s.expect(`,"mentions":`)
	mentions := s.ints()
	s.expect(`,"payload":null,"at":`)
	atText := s.str()
	s.expect(`}}`)
	if !s.ok || len(s.rest) > 0 || conv <= 0 || seq <= 0 {
		return nil, false
	}
	// As encoding/json, by way of time.Time's UnmarshalJSON, parses it.
	var at time.Time
	if at.UnmarshalText(atText) != nil {
		return nil, false
	}

	m := newMessageWithNullPayload()
	m.Conv, m.Seq, m.Sender = conv, seq, sender
	m.ClientID, m.Kind, m.Text = messageStrings(clientID, kind, text)
	m.Mentions = mentions
	m.At = at
	return m, true
}

// messageWithNull is a message and the bytes of its payload: encoding/json
// decodes a null payload to a json.RawMessage holding "null", which this
// way costs no allocation of its own.
type messageWithNull struct {
	msg  Message
	null [4]byte
}

func newMessageWithNullPayload() *Message {
	p := &messageWithNull{null: [4]byte{'n', 'u', 'l', 'l'}}
	p.msg.Payload = p.null[:]
	return &p.msg
}

// messageStrings converts a message's strings with one allocation, and
// none for the kind "text". They share memory, so that one kept alone
// keeps the others alive: messages are small, and mostly go whole.
func messageStrings(clientID, kind, text []byte) (string, string, string) {
	isText := string(kind) == kindText
	if isText {
		kind = nil
	}
	var b strings.Builder
	b.Grow(len(clientID) + len(kind) + len(text))
	b.Write(clientID)
	b.Write(kind)
	b.Write(text)
	all := b.String()
	c, all := all[:len(clientID)], all[len(clientID):]
	k, t := all[:len(kind)], all[len(kind):]
	if isText {
		k = kindText
	}
	return c, k, t
}

// eventScanner reads JSON tokens in the narrow forms decodeMessageFast
// accepts. After the first thing that does not fit, ok is false and every
// method does nothing and returns a zero value, so that a caller checks
// ok once at the end.
type eventScanner struct {
	rest []byte // what is left to read
	ok   bool
}

func (s *eventScanner) fail() { s.ok = false }

// skip consumes lit if the input continues with it.
func (s *eventScanner) skip(lit string) bool {
	if !s.ok || len(s.rest) < len(lit) || string(s.rest[:len(lit)]) != lit {
		return false
	}
	s.rest = s.rest[len(lit):]
	return true
}

// expect consumes lit, which must come next.
func (s *eventScanner) expect(lit string) {
	if !s.skip(lit) {
		s.fail()
	}
}

// int reads an integer that fits in an int64, in JSON's grammar: an
// optional minus, then 0 or digits without a leading zero. A fraction or
// exponent is left unread, so the caller's next expect fails.
func (s *eventScanner) int() int64 {
	if !s.ok {
		return 0
	}
	b := s.rest
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	n := 0
	for n < len(b) && '0' <= b[n] && b[n] <= '9' {
		n++
	}
	// More than 19 digits, without a leading zero, overflow an int64.
	if n == 0 || n > 19 || (n > 1 && b[0] == '0') {
		s.fail()
		return 0
	}
	var u uint64 // 19 digits fit in a uint64
	for _, c := range b[:n] {
		u = u*10 + uint64(c-'0')
	}
	limit := uint64(math.MaxInt64)
	if neg {
		limit++ // -1<<63
	}
	if u > limit {
		s.fail()
		return 0
	}
	s.rest = b[n:]
	if neg {
		return -int64(u) // wraps to math.MinInt64 for 1<<63, as wanted
	}
	return int64(u)
}

// ints reads null or an array of integers, decoded as encoding/json
// decodes them into a []int64: null to nil, [] to an empty slice.
func (s *eventScanner) ints() []int64 {
	if s.skip("null") {
		return nil
	}
	if !s.skip("[") {
		s.fail()
		return nil
	}
	if s.skip("]") {
		return []int64{}
	}
	// Size the slice by the commas up to the first ']'; int fails on
	// anything but integers and commas there.
	end := bytes.IndexByte(s.rest, ']')
	if end < 0 {
		s.fail()
		return nil
	}
	v := make([]int64, 0, 1+bytes.Count(s.rest[:end], []byte{','}))
	for {
		v = append(v, s.int())
		if !s.skip(",") {
			break
		}
	}
	s.expect("]")
	return v
}

// str reads a string that encoding/json would decode to its bytes as they
// are, and returns them: no escapes, no control characters (which JSON
// forbids) and valid UTF-8 (which encoding/json would replace).
func (s *eventScanner) str() []byte {
	if !s.skip(`"`) {
		s.fail()
		return nil
	}
	ascii := true
	for i, c := range s.rest {
		switch {
		case c == '"':
			v := s.rest[:i]
			if !ascii && !utf8.Valid(v) {
				s.fail()
				return nil
			}
			s.rest = s.rest[i+1:]
			return v
		case c < ' ' || c == '\\':
			s.fail()
			return nil
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	s.fail() // unterminated
	return nil
}
