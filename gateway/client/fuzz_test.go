package client

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzDecodeServerMessage feeds arbitrary WebSocket messages to the
// decoding the read loop does: splitting into frames, decoding each, and
// decoding message events and reply errors. Nothing may panic, every frame
// handed on has a type, and a decoded frame survives encoding again.
func FuzzDecodeServerMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"hello","data":{"account_id":7,"session_id":3,"node":"n1","heartbeat_ms":25000,"expires_at":"2026-01-01T00:00:00Z","limits":{}}}`,
		"{\"type\":\"reply\",\"id\":\"17\",\"data\":{\"conv\":12,\"seq\":41,\"at\":\"2026-01-01T00:00:00Z\",\"duplicate\":false}}\n{\"type\":\"message\",\"data\":{\"conv\":12,\"seq\":41,\"sender\":7,\"client_id\":\"x\",\"kind\":\"text\",\"text\":\"你好\",\"mentions\":[5],\"payload\":null,\"at\":\"2026-01-01T00:00:00Z\"}}",
		`{"type":"reply","id":"","error":{"code":"rate_limited","message":"slow","retry_after_ms":20}}`,
		`{"type":"reconnect","data":{"delay_ms":1800}}`,
		"\n\n{\"type\":\"read\",\"data\":{\"conv\":1,\"account\":2,\"seq\":3}}\r\n",
		`{"type":"message","data":{"conv":-1,"seq":"x"}}`,
		`null`, `[]`, `{"type":1}`, "\xff\xfe", `{"type":"reply","data":`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		orig := bytes.Clone(msg)
		n := 0
		bad, err := decodeServerMessage(msg, func(fr serverFrame) {
			n++
			if fr.Type == "" {
				t.Fatalf("a frame without type: %+v", fr)
			}
			if fr.Error != nil {
				_ = fr.Error.err().Error()
			}
			if fr.Type == EventMessage {
				if m, err := decodeMessage(fr.Data); err == nil && (m.Conv <= 0 || m.Seq <= 0) {
					t.Fatalf("accepted message %+v", m)
				}
			}
			b, err := json.Marshal(fr)
			if err != nil {
				t.Fatalf("a decoded frame does not encode: %v", err)
			}
			again, err := decodeFrame(b)
			if err != nil || again.Type != fr.Type || again.ID != fr.ID {
				t.Fatalf("%s decodes as %+v, %v", b, again, err)
			}
		})
		if (bad == 0) != (err == nil) {
			t.Fatalf("%d bad frames but error %v", bad, err)
		}
		if lines := bytes.Count(msg, []byte("\n")) + 1; n+bad > lines {
			t.Fatalf("%d frames from %d lines", n+bad, lines)
		}
		if !bytes.Equal(msg, orig) {
			t.Fatal("the decoder changed its input")
		}
	})
}

// TestMessageEventsDecodeInOnePass: the message events the server writes
// take decodeFrame's one pass, whatever their text, and give the message
// the general way gives.
func TestMessageEventsDecodeInOnePass(t *testing.T) {
	at := time.Date(2026, 5, 1, 8, 0, 0, 123456789, time.FixedZone("CST", 8*3600))
	for _, m := range []Message{
		{Conv: 12, Seq: 41, Sender: 7, ClientID: "c1", Kind: "text", Text: "下午三点开会", Mentions: []int64{5, 9}, At: at},
		{Conv: 1, Seq: 1, Kind: "text", Text: `a "data":{"conv":2} <b> & \u0000` + "\n\t", At: at},
		{Conv: 3, Seq: 2, Kind: "location", Payload: json.RawMessage(`{"data":{"lat":30.27,"lng":120.15}}`), At: at},
	} {
		line := serverMessageFrame(t, m)
		f, err := decodeFrame(line)
		if err != nil || f.msg == nil {
			t.Fatalf("%s: not decoded in one pass (%v)", line, err)
		}
		g, err := decodeAnyFrame(line)
		if err != nil {
			t.Fatal(err)
		}
		want, err := decodeMessage(g.Data)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(*f.msg, want) {
			t.Errorf("%s: one pass gives %+v, the general way %+v", line, *f.msg, want)
		}
	}
	// Not message events, or not decodable as one: the general way, so
	// that handleFrame reports the message as undecodable.
	for _, line := range []string{
		`{"type":"message","data":{"conv":0,"seq":1}}`,
		`{"type":"message","data":{"conv":1,"seq":0}}`,
		`{"type":"message","data":{"conv":1,"seq":"2"}}`,
		`{"type":"message","data":{"conv":1,"seq":2},"type":"read"}`,
		`{"type":"message","data":{"conv":1,"seq":2},"data":null}`,
	} {
		if f, err := decodeFrame([]byte(line)); err != nil || f.msg != nil {
			t.Errorf("%s: %+v, %v; want the general way", line, f, err)
		}
	}
}

// FuzzDecodeFrameOnePass: decodeFrame gives what the general way gives (a
// frame with its data raw, then the message decoded from it), except that
// a frame repeating its "data" key may decode to a merge of its repeats.
func FuzzDecodeFrameOnePass(f *testing.F) {
	for _, s := range []string{
		`{"type":"message","data":{"conv":12,"seq":41,"sender":7,"client_id":"x","kind":"text","text":"你好","mentions":[5],"payload":null,"at":"2026-01-01T00:00:00Z"}}`,
		`{"type":"message","data":{"conv":1,"seq":2,"payload":{"a":[1,2]}},"id":"7","error":{"code":"x"}}`,
		`{"type":"message","data":{"conv":1,"seq":2},"Data":{"text":"merged"}}`,
		`{"type":"message","data":{"conv":1,"seq":2,"at":"2026-01-01T00:00:00+08:00"},"TYPE":"read"}`,
		`{"type":"message","data":{"conv":1,"seq":2,"mentions":[1],"mentions":[2,3]}}`,
		`{"type":"message","data":{"conv":1e2,"seq":2}}`,
		`{"type":"message","data":{}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		fast, ferr := decodeFrame(line)
		gen, gerr := decodeAnyFrame(line)
		if (ferr == nil) != (gerr == nil) {
			t.Fatalf("one pass: %v; the general way: %v", ferr, gerr)
		}
		if fast.msg == nil {
			if !reflect.DeepEqual(fast, gen) {
				t.Fatalf("%+v, the general way %+v", fast, gen)
			}
			return
		}
		if fast.Type != EventMessage || fast.Data != nil || fast.msg.Conv <= 0 || fast.msg.Seq <= 0 {
			t.Fatalf("one pass accepted %+v (message %+v)", fast, *fast.msg)
		}
		if repeatsData(line) {
			return
		}
		want, err := decodeMessage(gen.Data)
		if err != nil {
			t.Fatalf("one pass decoded %+v; the general way: %v", *fast.msg, err)
		}
		if gen.Type != fast.Type || gen.ID != fast.ID || !reflect.DeepEqual(gen.Error, fast.Error) || !reflect.DeepEqual(*fast.msg, want) {
			t.Fatalf("one pass: %+v %+v; the general way: %+v %+v", fast, *fast.msg, gen, want)
		}
	})
}

// repeatsData reports whether the top-level object of a valid JSON line
// has more than one key that encoding/json matches to "data" (any case,
// any escaping).
func repeatsData(line []byte) bool {
	d := json.NewDecoder(bytes.NewReader(line))
	depth, n, key := 0, 0, true
	for {
		tok, err := d.Token()
		if err != nil {
			return n > 1
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' || v == '[' {
				depth++
			} else {
				depth--
			}
			key = depth == 1
			continue
		case string:
			if depth == 1 && key && strings.EqualFold(v, "data") {
				n++
			}
		}
		if depth == 1 {
			key = !key
		}
	}
}

// FuzzDecodeMessageFast: whatever decodeMessageFast accepts, json.Unmarshal
// into a messageFrame decodes to the same message, in a message event
// with a conversation and sequence; and decodeFrame takes it.
func FuzzDecodeMessageFast(f *testing.F) {
	at := time.Date(2026, 11, 24, 16, 23, 47, 123456000, time.UTC)
	for _, m := range []Message{
		{Conv: 12, Seq: 41, Sender: 7, ClientID: "lg-3f9a2c-17", Kind: "text", Text: "run 3f9a2c sent 1764000000123456789 下午三点开会", At: at},
		{Conv: 12, Seq: 42, Sender: 7, ClientID: "c1", Kind: "text", Text: "@a @b", Mentions: []int64{5, 9, 1 << 40}, At: at},
		{Conv: 1, Seq: 1, Kind: "image", Mentions: []int64{}, At: at.In(time.FixedZone("", 8*3600))},
		{Conv: 3, Seq: 2, Kind: "location", Payload: json.RawMessage(`{"lat":30.27,"lng":120.15}`), At: at},
		{Conv: 1, Seq: 1, Kind: "text", Text: `quote " backslash \ <b> & é` + "\n\t\u2028", At: at},
		{Conv: math.MaxInt64, Seq: math.MaxInt64, Sender: math.MinInt64, Kind: "text", Mentions: []int64{math.MinInt64, -1, 0}},
	} {
		f.Add(serverMessageFrame(f, m))
	}
	const ok = `{"type":"message","data":{"conv":1,"seq":2,"sender":3,"client_id":"c","kind":"text","text":"hi","mentions":null,"payload":null,"at":"2026-01-01T00:00:00Z"}}`
	for _, r := range [][2]string{
		{`"text":"hi"`, "\"text\":\"h\xffi\""},          // invalid UTF-8
		{`"text":"hi"`, "\"text\":\"h\xed\xa0\x80i\""},  // a surrogate
		{`"text":"hi"`, "\"text\":\"h\x01i\x7f\""},      // control characters
		{`"text":"hi"`, `"text":"h\u0069"`},             // an escape
		{`"text":"hi"`, `"text":"hi`},                   // unterminated
		{`"conv":1`, `"conv":9223372036854775808`},      // overflow
		{`"sender":3`, `"sender":-9223372036854775808`}, // the least int64
		{`"sender":3`, `"sender":-9223372036854775809`}, // underflow
		{`"sender":3`, `"sender":-0`},                   // -0 is JSON
		{`"sender":3`, `"sender":03`},                   // a leading zero is not
		{`"sender":3`, `"sender":-`},                    //
		{`"sender":3`, `"sender":3.0`},                  // a fraction
		{`"sender":3`, `"sender":3e0`},                  // an exponent
		{`"sender":3`, `"sender":"3"`},                  // a string
		{`"conv":1`, `"conv":-1`},                       // no conversation
		{`"seq":2`, `"seq":0`},                          // no sequence
		{`"mentions":null`, `"mentions":[1,-2,0]`},      //
		{`"mentions":null`, `"mentions":[]`},            // empty, not nil
		{`"mentions":null`, `"mentions":[1,]`},          //
		{`"mentions":null`, `"mentions":[1 ,2]`},        //
		{`"mentions":null`, `"mentions":[01]`},          //
		{`"mentions":null`, `"mentions":[1]]`},          //
		{`"payload":null`, `"payload":{}`},              //
		{`"payload":null`, `"payload":nul`},             //
		{`"at":"2026-01-01T00:00:00Z"`, `"at":null`},    //
		{`"2026-01-01T00:00:00Z`, `"2026-01-01T08:00:00.5+08:00`},
		{`"2026-01-01T00:00:00Z`, `"2026-01-01t00:00:00z`},
		{`"2026-01-01T00:00:00Z`, `"2026-02-30T00:00:00Z`},
		{`"2026-01-01T00:00:00Z`, `"2026-01-01T00:00:00+24:00`},
		{`"kind":"text"`, `"kind":"texts"`},        //
		{`"kind":"text"`, `"kind":""`},             //
		{`"conv":1,`, `"conv": 1,`},                // whitespace
		{`"conv":1,"seq":2,`, `"seq":2,"conv":1,`}, // keys out of order
		{`"sender":3,`, ``},                        // a missing key
		{`"sender":3,`, `"sender":3,"extra":4,`},   // an extra key
		{`"conv":1`, `"Conv":1`},                   // case, as json matches keys
		{`}}`, `},"id":"7"}`},                      //
		{`}}`, `}}x`},                              // trailing garbage
		{`}}`, `}} `},                              //
		{`}}`, `}`},                                //
	} {
		f.Add([]byte(strings.Replace(ok, r[0], r[1], 1)))
	}
	f.Add([]byte(ok))
	f.Fuzz(func(t *testing.T, line []byte) {
		scratch := bytes.Clone(line)
		m, ok := decodeMessageFast(scratch)
		if !ok {
			if m != nil {
				t.Fatalf("declined, with %+v", *m)
			}
			return
		}
		got := *m
		// The message must not share memory with the line.
		clear(scratch)
		var mf messageFrame
		if err := json.Unmarshal(line, &mf); err != nil {
			t.Fatalf("decoded %+v; json: %v", got, err)
		}
		if mf.Type != EventMessage || mf.ID != "" || mf.Error != nil || mf.Data == nil || mf.Data.Conv <= 0 || mf.Data.Seq <= 0 {
			t.Fatalf("decoded %+v; json: %+v", got, mf)
		}
		want := *mf.Data
		if !sameTime(got.At, want.At) {
			t.Fatalf("at %v; json: %v", got.At, want.At)
		}
		got.At, want.At = time.Time{}, time.Time{}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("decoded %#v; json: %#v", got, want)
		}
		if fr, err := decodeFrame(line); err != nil || fr.msg == nil || !reflect.DeepEqual(*fr.msg, *m) {
			t.Fatalf("decodeFrame: %+v, %v; want %+v", fr, err, *m)
		}
	})
}

// sameTime reports whether a and b are the same instant, shown the same
// way in the same location.
func sameTime(a, b time.Time) bool {
	an, ao := a.Zone()
	bn, bo := b.Zone()
	return a.Equal(b) && an == bn && ao == bo && a.Location().String() == b.Location().String() &&
		a.Format(time.RFC3339Nano) == b.Format(time.RFC3339Nano)
}

// TestDecodeMessageFast: the message events the server writes take
// decodeMessageFast; others it declines, and decodeFrame still decodes
// them in one pass, as encoding/json does.
func TestDecodeMessageFast(t *testing.T) {
	at := time.Date(2026, 11, 24, 16, 23, 47, 123456000, time.UTC)
	fast := []Message{
		{Conv: 12, Seq: 41, Sender: 7, ClientID: "lg-3f9a2c-17", Kind: "text", Text: "run 3f9a2c sent 1764000000123456789 下午三点开会", At: at},
		{Conv: 12, Seq: 42, Sender: 7, ClientID: "c1", Kind: "text", Text: "@a @b", Mentions: []int64{5, 9}, At: at},
		{Conv: 1, Seq: 1, Kind: "image", Mentions: []int64{}, At: at.In(time.FixedZone("", 8*3600))},
	}
	slow := []Message{
		{Conv: 1, Seq: 1, Kind: "text", Text: `say "hi"`, At: at},
		{Conv: 1, Seq: 1, Kind: "text", Text: "a <b>", At: at}, // json.Marshal escapes <
		{Conv: 1, Seq: 1, Kind: "text", Text: "two\nlines", At: at},
		{Conv: 3, Seq: 2, Kind: "location", Payload: json.RawMessage(`{"lat":30.27,"lng":120.15}`), At: at},
	}
	for i, m := range append(fast, slow...) {
		line := serverMessageFrame(t, m)
		_, ok := decodeMessageFast(line)
		if want := i < len(fast); ok != want {
			t.Errorf("%s: decodeMessageFast %v, want %v", line, ok, want)
		}
		f, err := decodeFrame(line)
		if err != nil || f.msg == nil {
			t.Fatalf("%s: not decoded in one pass (%v)", line, err)
		}
		var mf messageFrame
		if err := json.Unmarshal(line, &mf); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(*f.msg, *mf.Data) {
			t.Errorf("%s: decodes to %+v, json to %+v", line, *f.msg, *mf.Data)
		}
	}
}
