package client

import (
	"bytes"
	"encoding/json"
	"testing"
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
