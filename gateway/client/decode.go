package client

import (
	"bytes"
	"encoding/json"
	"errors"
)

// serverFrame is one frame from the server: a reply (Type "reply", ID,
// Data or Error) or an event (Type, Data). A message event that decoded
// in one pass (decodeFrame) has msg instead of Data.
type serverFrame struct {
	Type  string          `json:"type"`
	ID    string          `json:"id"`
	Data  json.RawMessage `json:"data"` // a copy: it outlives the read buffer
	Error *wireError      `json:"error"`
	msg   *Message
}

// messageFrame is a message event decoded in one pass.
type messageFrame struct {
	Type  string     `json:"type"`
	ID    string     `json:"id"`
	Data  *Message   `json:"data"`
	Error *wireError `json:"error"`
}

// messagePrefix starts every message event the server writes. Such frames
// are most of what a client reads, so they are decoded straight into a
// Message: decoding the frame with its data as raw bytes, and then the
// data, scans the message twice and copies it once.
var messagePrefix = []byte(`{"type":"message","data":{`)

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
//
// A message event that starts with messagePrefix is decoded in one pass,
// to the same result as the general way, except for a frame that repeats
// its "data" key (which no server writes): its repeats are merged into one
// Message, where the general way keeps the last. The pass is
// decodeMessageFast, for the layout the server writes, or else
// json.Unmarshal into a messageFrame. One that does not decode in one
// pass, or whose message has no conversation or sequence, is decoded the
// general way, so that handleFrame reports it as any other.
func decodeFrame(line []byte) (serverFrame, error) {
	if bytes.HasPrefix(line, messagePrefix) {
		if m, ok := decodeMessageFast(line); ok {
			return serverFrame{Type: EventMessage, msg: m}, nil
		}
		var mf messageFrame
		if json.Unmarshal(line, &mf) == nil && mf.Type == EventMessage && mf.Data != nil && mf.Data.Conv > 0 && mf.Data.Seq > 0 {
			return serverFrame{Type: mf.Type, ID: mf.ID, Error: mf.Error, msg: mf.Data}, nil
		}
	}
	return decodeAnyFrame(line)
}

// decodeAnyFrame decodes one frame the general way: its data stays raw.
func decodeAnyFrame(line []byte) (serverFrame, error) {
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
