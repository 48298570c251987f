package gateway

import (
	"encoding/json"
	"testing"

	"github.com/zhangban/zhangban/messaging"
)

// FuzzDecodeFrame feeds arbitrary bytes to the frame decoder and to the
// data decoders of every operation: they must never panic, and whatever
// they accept must be a well-formed frame.
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"id":"1","type":"auth","data":{"token":"abc"}}`,
		`{"id":"2","type":"send","data":{"conv":12,"client_id":"x","text":"你好","mentions":[5],"payload":{"a":1}}}`,
		`{"type":"sync","data":{"convs":{"12":40},"cursor":"YzE6MDowOjA","limit":100}}`,
		`{"id":"3","type":"history","data":{"conv":1,"before":10,"limit":50}}`,
		`{"type":"ack","data":{"conv":1,"seq":2}}`,
		`{"id":"4","type":"presence","data":{"accounts":[1,2],"watch":true}}`,
		`{"type":"ping"}`, `null`, `[]`, `{"type":1}`, `{"type":"x","data":"\u0000"}`, "\xff\xfe",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, buf []byte) {
		fr, rerr := DecodeFrame(buf)
		if rerr != nil {
			if rerr.Code != ErrInvalidFrame {
				t.Fatalf("decoder error code %q", rerr.Code)
			}
			return
		}
		if fr.Type == "" || len(fr.ID) > maxIDBytes {
			t.Fatalf("accepted a frame without type or with a long id: %+v", fr)
		}
		targets := []any{&authData{}, &convSeq{}, &historyData{}, &directData{}, &presenceData{}, &messaging.SendRequest{}, &syncData{}}
		for _, v := range targets {
			if e := decodeData(fr, v); e == nil {
				if _, err := json.Marshal(v); err != nil {
					t.Fatalf("decoded data does not encode again: %v", err)
				}
			}
		}
	})
}
