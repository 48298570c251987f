package gateway

import (
	"encoding/json"
	"reflect"
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

// FuzzStrictUnmarshal checks strictUnmarshal against decodeStrict, the
// json.Decoder it stands for, on every type frames are decoded into: the
// same verdict and the same value.
func FuzzStrictUnmarshal(f *testing.F) {
	for _, s := range []string{
		`{"id":"1","type":"send","data":{"conv":12,"client_id":"x","text":"hi"}}`,
		`{"conv":12,"client_id":"x","text":"你好","mentions":[5],"payload":{"a":{"b":[1,"}"]}}}`,
		`{"convs":{"12":40,"x":1},"cursor":"c","limit":100}`, `{"conv":1,"before":null,"after":3}`,
		`{"accounts":[1,2],"watch":true}`, `{"Type":"x"}`, `{"t\u0079pe":"x"}`, `{"type":"a","type":"b"}`,
		`{"type":"x"} {}`, `{"type":"x","bogus":1}`, ` null `, `[]`, `{"conv":1.5}`, `{"text":"\ud800"}`,
		`{"id":"\"}","type":"x"}`, `{"data":{"x":"\\"},"type":"y"}`, `{"ID":"1","type":"ping"}`, `{}`, `{"type":"ping",}`,
		// The hand decoder's edges (decodeFast).
		` { "conv" : 1 , "seq" : 2 } `, `{"conv":1,"seq":2,"conv":3}`, `{"conv":-0,"seq":1}`, `{"conv":01}`, `{"conv":1e2}`,
		`{"conv":1,"mentions":[ 1 , -2 ],"payload":null}`, `{"mentions":[]}`, `{"mentions":[1,]}`, `{"mentions":[1 2]}`,
		`{"type":"send","data":null}`, `{"type":"send","data": {"a":[1,{"b":"}"}]} }`, `{"type":"x","data":{"a":1}x}`,
		`{"text":"a\u0000b","client_id":"\u4f60"}`, "{\"text\":\"\xff\"}", `{"te\u0078t":"a"}`, `{"conv":1}{}`, `{"conv":1,}`,
		`{"id":"1","type":"a","data":1,"x":2}`, `{"type":"ack","data":{"conv":1,"seq":2}}`,
	} {
		f.Add([]byte(s))
	}
	targets := []func() any{
		func() any { return new(Frame) }, func() any { return new(messaging.SendRequest) },
		func() any { return new(syncData) }, func() any { return new(historyData) },
		func() any { return new(presenceData) }, func() any { return new(convSeq) },
		func() any { return new(authData) }, func() any { return new(directData) },
		func() any { return new(struct{}) },
	}
	f.Fuzz(func(t *testing.T, buf []byte) {
		for _, mk := range targets {
			got, want := mk(), mk()
			gotErr, wantErr := strictUnmarshal(buf, got), decodeStrict(buf, want)
			if (gotErr == nil) != (wantErr == nil) || (gotErr != nil && gotErr.Error() != wantErr.Error()) {
				t.Fatalf("%T from %q: error %v, the Decoder's %v", got, buf, gotErr, wantErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%T from %q: %+v, the Decoder's %+v", got, buf, got, want)
			}
		}
	})
}
