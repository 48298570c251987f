package client

import (
	"bytes"
	"encoding/json"
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
