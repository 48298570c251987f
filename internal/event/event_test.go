package event

import (
	"encoding/json"
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
// panic, and an event it accepts must encode and decode to itself.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"message","conv":12,"seq":40,"data":{"text":"hi"}}`,
		`{"type":"conversation","to":[1,2],"join":[3],"leave":[4],"data":{}}`,
		`{"type":"read","to":[1]}`, `{"type":"","conv":1,"data":{}}`, `{"type":"x","data":{}}`,
		`{"type":"x","conv":1,"data":  { "a" : 1 } }`, `null`, `[]`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, buf []byte) {
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
