package event

import (
	"encoding/json"
	"reflect"
	"testing"
)

// AppendJSON writes what json.Marshal writes for events whose data is
// compact JSON, as publishers encode it.
func TestAppendJSONMatchesMarshal(t *testing.T) {
	for _, e := range []Event{
		{Type: TypeMessage, Conv: 12, Seq: 40, Data: json.RawMessage(`{"conv":12,"seq":40,"text":"\u003c你好\u003e"}`)},
		{Type: TypeConversation, Conv: 3, To: []int64{7}, Join: []int64{7, 8}, Leave: []int64{9}, Data: json.RawMessage(`{}`)},
		{Type: TypeRead, To: []int64{-1, 0, 9_007_199_254_740_993}, Data: json.RawMessage(`[1,"x",null]`)},
		{Type: `odd "type" <&>`, Conv: -5, Seq: -1, To: []int64{}, Data: json.RawMessage(`null`)},
	} {
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("AppendJSON\n got %s\nwant %s", got, want)
		}
	}
}

// FuzzDecode feeds arbitrary bytes to the bus decoder: it must never
// panic; what its hand parser accepts, json.Unmarshal must decode to the
// same event; and an event it accepts must encode and decode to itself.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"message","conv":12,"seq":40,"data":{"text":"hi"}}`,
		`{"type":"conversation","to":[1,2],"join":[3],"leave":[4],"data":{}}`,
		`{"type":"read","to":[1]}`, `{"type":"","conv":1,"data":{}}`, `{"type":"x","data":{}}`,
		`{"type":"x","conv":1,"data":  { "a" : 1 } }`, `null`, `[]`, "\xff",
		`{"type":"x","conv":-0,"data":1}`, `{"type":"x","conv":007,"data":1}`, `{"type":"x","seq":1234567890123456789,"data":1}`,
		`{"type":"x","to":[],"data":1}`, `{"type":"x","to":[1,],"data":1}`, `{"type":"x","data":null}`, `{"type":"x","data":{} }`,
		`{"type":"x","data":{},"data":{}}`, `{"type":"x","data":{}`, `{"type":"a\"b","data":1}`, `{"type":"x","Conv":1,"data":1}`,
	} {
		f.Add([]byte(s))
	}
	for _, e := range canonicalEvents {
		f.Add(e.AppendJSON(nil))
	}
	f.Fuzz(func(t *testing.T, buf []byte) {
		if fast, ok := decodeCanonical(buf); ok {
			var slow Event
			if err := json.Unmarshal(buf, &slow); err != nil {
				t.Fatalf("parsed %q by hand, json.Unmarshal: %v", buf, err)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("%q: by hand %+v, json.Unmarshal %+v", buf, fast, slow)
			}
		}
		e, err := Decode(buf)
		if err != nil {
			return
		}
		if !json.Valid(e.Data) {
			t.Fatalf("accepted data that is not JSON: %q", e.Data)
		}
		again, err := Decode(e.AppendJSON(nil))
		if err != nil {
			t.Fatalf("re-decoding %s: %v", e.AppendJSON(nil), err)
		}
		if string(again.AppendJSON(nil)) != string(e.AppendJSON(nil)) {
			t.Fatalf("round trip changed the event: %s, then %s", e.AppendJSON(nil), again.AppendJSON(nil))
		}
	})
}

var canonicalEvents = []Event{
	{Type: TypeMessage, Conv: 12, Seq: 40, Data: json.RawMessage(`{"conv":12,"seq":40,"text":"\u003c你好\u003e"}`)},
	{Type: TypeConversation, Conv: 3, To: []int64{7}, Join: []int64{7, 8}, Leave: []int64{9}, Data: json.RawMessage(`{}`)},
	{Type: TypeRead, To: []int64{-1, 0, 900_719_925_474_099_312}, Data: json.RawMessage(`[1,"x",{"a":null}]`)},
	{Type: TypePresence, To: []int64{5}, Data: json.RawMessage(`"online"`)},
}

// Events as nodes publish them take the hand parser, and give what they
// were; the others are json.Unmarshal's.
func TestDecodeCanonical(t *testing.T) {
	for _, want := range canonicalEvents {
		buf := want.AppendJSON(nil)
		got, ok := decodeCanonical(buf)
		if !ok {
			t.Errorf("%s: not parsed by hand", buf)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v", buf, got)
		}
	}
	for _, s := range []string{
		`{"type":"x","conv":1, "data":{}}`, `{"type":"x","conv":01,"data":{}}`,
		`{"type":"x","to":[],"data":1}`, `{"type":"\u0078","data":1}`, `{"type":"x","data":{}} `,
		`{"type":"x","seq":1234567890123456789,"data":1}`, `{"type":"x","seq":-0,"data":1}`, `{"type":"x","data":{},"to":[1]}`,
		`{"type":"x","data": {}}`, `{"type":"x","data":{} }`, `{"type":"x","to":],"data":1}`, `{"type":"a\\","data":1}`,
		"{\"type\":\"\xff\",\"data\":1}",
	} {
		if _, ok := decodeCanonical([]byte(s)); ok {
			t.Errorf("%s: parsed by hand; json.Unmarshal should decide", s)
		}
		fast, err1 := Decode([]byte(s))
		slow, err2 := decodeReflect([]byte(s))
		if !reflect.DeepEqual(fast, slow) || (err1 == nil) != (err2 == nil) {
			t.Errorf("%s: Decode %+v, %v; json.Unmarshal %+v, %v", s, fast, err1, slow, err2)
		}
	}
}

// BenchmarkDecode compares the hand parser with json.Unmarshal on a
// message event as nodes publish it.
func BenchmarkDecode(b *testing.B) {
	e := Event{Type: TypeMessage, Conv: 4711, Seq: 123456, Data: json.RawMessage(
		`{"conv":4711,"seq":123456,"sender":90210,"client_id":"c-9b1f0e7a-0001","kind":"text","text":"下午三点在三楼会议室开会，请准时参加。","at":"2026-11-24T22:15:33.123456Z"}`)}
	buf := e.AppendJSON(nil)
	for _, c := range []struct {
		name   string
		decode func([]byte) (Event, error)
	}{{"canonical", Decode}, {"json.Unmarshal", decodeReflect}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.decode(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
