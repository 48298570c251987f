package client

import (
	"bytes"
	"encoding/json"
	"errors"
)

// serverFrame is one frame from the server: a reply (Type "reply", ID,
// Data or Error) or an event (Type, Data).
type serverFrame struct {
	Type  string          `json:"type"`
	ID    string          `json:"id"`
	Data  json.RawMessage `json:"data"` // a copy: it outlives the read buffer
	Error *wireError      `json:"error"`
}

var (
	errNoType     = errors.New("frame without a type")
	errBadMessage = errors.New("message event without a conversation or sequence")
)

// decodeServerMessage splits one WebSocket message into its frames (one
// JSON object per line) and calls fn with each one that decodes. It
// returns how many lines did not decode and the first such error. fn may
// keep the frame: it shares no memory with msg.
func decodeServerMessage(msg []byte, fn func(serverFrame)) (bad int, err error) {
	for len(msg) > 0 {
		line := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		f, ferr := decodeFrame(line)
		if ferr != nil {
			if bad == 0 {
				err = ferr
			}
			bad++
			continue
		}
		fn(f)
	}
	return bad, err
}

// decodeFrame decodes one frame. Unknown fields are ignored: servers may
// add fields within a protocol version.
func decodeFrame(line []byte) (serverFrame, error) {
	var f serverFrame
	if err := json.Unmarshal(line, &f); err != nil {
		return serverFrame{}, err
	}
	if f.Type == "" {
		return serverFrame{}, errNoType
	}
	return f, nil
}

// decodeMessage decodes the data of a message event.
func decodeMessage(data []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(data, &m); err != nil {
		return Message{}, err
	}
	if m.Conv <= 0 || m.Seq <= 0 {
		return Message{}, errBadMessage
	}
	return m, nil
}
