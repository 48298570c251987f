package gateway

import (
	"reflect"
	"testing"

	"github.com/zhangban/zhangban/messaging"
)

// BenchmarkDecodeFrame decodes the frames a busy node reads most: sends
// and acks, envelope and data.
func BenchmarkDecodeFrame(b *testing.B) {
	send := []byte(`{"id":"s-1842","type":"send","data":{"conv":4711,"client_id":"lg-a6fe1627-184233","text":"下午三点在三楼会议室开会，请准时参加。"}}`)
	ack := []byte(`{"type":"ack","data":{"conv":4711,"seq":123456}}`)
	b.Run("send", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f, rerr := DecodeFrame(send)
			var r messaging.SendRequest
			if rerr != nil || decodeData(f, &r) != nil {
				b.Fatal(rerr)
			}
		}
	})
	b.Run("ack", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f, rerr := DecodeFrame(ack)
			var a convSeq
			if rerr != nil || decodeData(f, &a) != nil {
				b.Fatal(rerr)
			}
		}
	})
}

// The frames clients send most take the hand decoder, and give what
// decodeStrict gives; what it is not sure of, it leaves to strictUnmarshal.
func TestDecodeFast(t *testing.T) {
	type target = func() any
	frame := func() any { return new(Frame) }
	send := func() any { return new(messaging.SendRequest) }
	ack := func() any { return new(convSeq) }
	for _, c := range []struct {
		mk    target
		in    string
		taken bool
	}{
		{frame, `{"id":"s-1","type":"send","data":{"conv":4711,"client_id":"c1","text":"开会"}}`, true},
		{frame, ` { "type" : "ping" } `, true},
		{frame, `{"type":"send","data":null}`, true},
		{frame, `{}`, true},
		{ack, `{"conv":4711,"seq":123456}`, true},
		{ack, `{"seq":-2,"conv":0}`, true},
		{send, `{"conv":1,"client_id":"c","kind":"text","text":"hi","mentions":[ 2 , 3 ],"payload":{"a":[1,"}"]}}`, true},
		{send, `{"conv":1,"client_id":"c","payload":null}`, true},

		{frame, `{} {}`, false},
		{frame, `{}x`, false},
		{frame, `{"type":"x","data":{"a":1x}}`, false},
		{frame, `{"type":"x","data":[1,]}`, false},
		{frame, `{"type":"x";"id":"1"}`, false},
		{frame, `{"type":"x" "id":"1"}`, false},
		{frame, `{"type":"x","type":"y"}`, false},
		{frame, `{"Type":"x"}`, false},
		{frame, `{"t\u0079pe":"x"}`, false},
		{frame, `{"type":"x\ty"}`, false},
		{frame, `{"type":"x","extra":1}`, false},
		{ack, `{"conv":1,"seq":2.0}`, false},
		{ack, `{"conv":1,"seq":2}{}`, false},
		{ack, `{"conv":1,"seq":2,}`, false},
		{ack, `{"conv"11}`, false},
		{ack, `{"conv" "seq":1}`, false},
		{send, `{"conv":1,"mentions":[1 23]}`, false},
		{send, `{"conv":1,"mentions":[1;2]}`, false},
		{send, `{"conv":1,"mentions":12}`, false},
		{send, `{"conv":1,"mentions":"[1]"}`, false},
		{send, `{"conv":1,"mentions":[]}`, false},
		{send, `{"conv":1,"mentions":[1,,2]}`, false},
		{send, `{"conv":1,"mentions":[1 2]}`, false},
		{send, `{"conv":1,"text":"a\nb"}`, false},
		{send, `{"conv":1,"text":null}`, false},
	} {
		got, want := c.mk(), c.mk()
		taken := decodeFast([]byte(c.in), got)
		if taken != c.taken {
			t.Errorf("%T %s: taken %v, want %v", got, c.in, taken, c.taken)
			continue
		}
		if !taken {
			if !reflect.DeepEqual(got, c.mk()) {
				t.Errorf("%T %s: not taken, but changed to %+v", got, c.in, got)
			}
			continue
		}
		if err := decodeStrict([]byte(c.in), want); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%T %s: %+v; decodeStrict %+v, %v", got, c.in, got, want, err)
		}
	}
}
