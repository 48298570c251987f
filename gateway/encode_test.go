package gateway

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/zhangban/zhangban/messaging"
)

// The frames encoded by hand are byte for byte what json.Marshal gives for
// the same reply or event.
func TestHandEncodedFramesMatchJSON(t *testing.T) {
	at := time.Date(2026, 11, 24, 14, 3, 7, 123456000, time.UTC)
	for _, id := range []string{"", "1", "lg-abc-42", `quo"te`, `back\slash`, "<tag>&", "tab\there", "你好", "\x00\x7f", "\xff"} {
		for _, s := range []messaging.Sent{
			{Conv: 12, Seq: 40, At: at},
			{Conv: 9_007_199_254_740_993, Seq: 1, At: at.In(time.FixedZone("CST", 8*3600)), Duplicate: true},
			{At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		} {
			want, err := json.Marshal(reply{Type: "reply", ID: id, Data: s})
			if err != nil {
				t.Fatal(err)
			}
			if got := sentReply(id, s); string(got) != string(want) {
				t.Errorf("sentReply(%q, %+v)\n got %s\nwant %s", id, s, got, want)
			}
		}
	}
	for _, typ := range []string{"message", "read", "presence", `we"ird`, "ünï"} {
		for _, data := range []string{`{"conv":1,"seq":2,"text":"\u003cb\u003e 你好"}`, `{}`, `[1,2]`, `"s"`, `null`} {
			want, err := json.Marshal(serverEvent{Type: typ, Data: json.RawMessage(data)})
			if err != nil {
				t.Fatal(err)
			}
			if got := eventFrame(typ, []byte(data)); string(got) != string(want) {
				t.Errorf("eventFrame(%q, %s)\n got %s\nwant %s", typ, data, got, want)
			}
		}
	}
}
