package mobileapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/messaging"
)

// The messaging routes offer over HTTP what the gateway offers over the
// WebSocket (docs/protocol.md), with the same semantics: both call the same
// messaging.Service, and its errors map to codes in errors.go.
func (a *API) messagingRoutes() {
	m := a.mux
	m.HandleFunc("POST /v1/conversations", a.authed(a.idempotent(a.createGroup)))
	m.HandleFunc("POST /v1/conversations/direct", a.authed(a.directConversation))
	m.HandleFunc("GET /v1/conversations", a.authed(a.conversationChanges))
	m.HandleFunc("GET /v1/conversations/{id}", a.authed(a.getConversation))
	m.HandleFunc("PATCH /v1/conversations/{id}", a.authed(a.renameConversation))
	m.HandleFunc("GET /v1/conversations/{id}/members", a.authed(a.conversationMembers))
	m.HandleFunc("POST /v1/conversations/{id}/members", a.authed(a.addConversationMembers))
	m.HandleFunc("DELETE /v1/conversations/{id}/members/{account}", a.authed(a.removeConversationMember))
	m.HandleFunc("PATCH /v1/conversations/{id}/members/{account}", a.authed(a.setConversationRole))
	m.HandleFunc("POST /v1/conversations/{id}/messages", a.authed(a.sendMessage))
	m.HandleFunc("GET /v1/conversations/{id}/messages", a.authed(a.listMessages))
	m.HandleFunc("POST /v1/conversations/{id}/read", a.authed(a.markRead))
	m.HandleFunc("GET /v1/conversations/{id}/messages/{seq}/readers", a.authed(a.messageReaders))
	m.HandleFunc("POST /v1/sync", a.authed(a.syncConversations))
}

// queryLimit reads an optional page size of 1 to most; 0 when absent,
// which lets the service apply its default.
func queryLimit(q url.Values, most int64) (int, *Error) {
	n, e := queryInt(q, "limit", 0)
	if e != nil {
		return 0, e
	}
	if q.Has("limit") && (n < 1 || n > most) {
		return 0, invalidField("limit", "1-"+strconv.FormatInt(most, 10))
	}
	return int(n), nil
}

// querySeq reads an optional non-negative sequence parameter.
func querySeq(q url.Values, name string) (int64, *Error) {
	n, e := queryInt(q, name, 0)
	if e == nil && n < 0 {
		e = invalidField(name, "must not be negative")
	}
	return n, e
}

type newGroupRequest struct {
	Title   string  `json:"title"`
	Members []int64 `json:"members"`
}

func (a *API) createGroup(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	var req newGroupRequest
	if e := decodeJSON(w, r, maxBodyDefault, &req); e != nil {
		writeAPIError(w, r, e)
		return
	}
	c, err := a.msg.CreateGroup(r.Context(), actor(r, p), req.Title, req.Members)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/conversations/"+strconv.FormatInt(c.ID, 10))
	writeJSON(w, http.StatusCreated, c)
}

type directRequest struct {
	Account int64 `json:"account"`
}

func (a *API) directConversation(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	var req directRequest
	if e := decodeJSON(w, r, maxBodyDefault, &req); e != nil {
		writeAPIError(w, r, e)
		return
	}
	c, err := a.msg.Direct(r.Context(), actor(r, p), req.Account)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// conversationChanges lists the caller's conversations changed since a
// cursor (all of them without one): the HTTP form of sync's first half.
func (a *API) conversationChanges(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	q := r.URL.Query()
	limit, e := queryLimit(q, 500)
	if e != nil {
		writeAPIError(w, r, e)
		return
	}
	convs, cur, more, err := a.msg.Changes(r.Context(), actor(r, p), q.Get("cursor"), limit)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"conversations": convs, "cursor": cur, "more": more})
}

func (a *API) getConversation(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		c, err := a.msg.Get(r.Context(), actor(r, p), id)
		return c, http.StatusOK, err
	})
}

type renameRequest struct {
	Title string `json:"title"`
}

func (a *API) renameConversation(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		var req renameRequest
		if e := decodeJSON(w, r, maxBodyDefault, &req); e != nil {
			return nil, 0, e
		}
		c, err := a.msg.Rename(r.Context(), actor(r, p), id, req.Title)
		return c, http.StatusOK, err
	})
}

func (a *API) conversationMembers(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		q := r.URL.Query()
		after, e := querySeq(q, "after")
		if e != nil {
			return nil, 0, e
		}
		limit, e := queryLimit(q, messaging.MaxGroupMembers)
		if e != nil {
			return nil, 0, e
		}
		ms, more, err := a.msg.Members(r.Context(), actor(r, p), id, after, limit)
		return map[string]any{"members": ms, "more": more}, http.StatusOK, err
	})
}

type addMembersRequest struct {
	Accounts []int64 `json:"accounts"`
}

func (a *API) addConversationMembers(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		var req addMembersRequest
		if e := decodeJSON(w, r, maxBodyDefault, &req); e != nil {
			return nil, 0, e
		}
		c, err := a.msg.AddMembers(r.Context(), actor(r, p), id, req.Accounts)
		return c, http.StatusOK, err
	})
}

// withMember reads the {id} and {account} path parameters and runs fn.
func (a *API) withMember(w http.ResponseWriter, r *http.Request, fn func(conv, account int64) (any, error)) {
	a.withID(w, r, func(conv int64) (any, int, error) {
		account, e := pathID(r, "account")
		if e != nil {
			return nil, 0, e
		}
		v, err := fn(conv, account)
		return v, http.StatusOK, err
	})
}

// removeConversationMember removes a member from a group; removing oneself
// is leaving.
func (a *API) removeConversationMember(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withMember(w, r, func(conv, account int64) (any, error) {
		return a.msg.RemoveMember(r.Context(), actor(r, p), conv, account)
	})
}

type roleRequest struct {
	Role string `json:"role"`
}

func (a *API) setConversationRole(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withMember(w, r, func(conv, account int64) (any, error) {
		var req roleRequest
		if e := decodeJSON(w, r, maxBodyDefault, &req); e != nil {
			return nil, e
		}
		return a.msg.SetRole(r.Context(), actor(r, p), conv, account, req.Role)
	})
}

// sendRequest is messaging.SendRequest without conv, which is in the path.
type sendRequest struct {
	ClientID string          `json:"client_id"`
	Kind     string          `json:"kind"`
	Text     string          `json:"text"`
	Mentions []int64         `json:"mentions"`
	Payload  json.RawMessage `json:"payload"`
}

// sendMessage answers 201 for a new message and 200 for a retry of one
// already sent (duplicate: true, its original seq and time).
func (a *API) sendMessage(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		var req sendRequest
		if e := decodeJSON(w, r, maxBodyDefault, &req); e != nil {
			return nil, 0, e
		}
		sent, err := a.msg.Send(r.Context(), actor(r, p), messaging.SendRequest{Conv: id, ClientID: req.ClientID, Kind: req.Kind,
			Text: req.Text, Mentions: req.Mentions, Payload: req.Payload})
		if sent.Duplicate {
			return sent, http.StatusOK, err
		}
		return sent, http.StatusCreated, err
	})
}

// listMessages pages history forwards (?after=), backwards (?before=) or,
// with neither, backwards from the newest message.
func (a *API) listMessages(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		q := r.URL.Query()
		if q.Has("after") && q.Has("before") {
			return nil, 0, invalidField("after", "give after or before, not both")
		}
		after, e := querySeq(q, "after")
		if e != nil {
			return nil, 0, e
		}
		before, e := querySeq(q, "before")
		if e != nil {
			return nil, 0, e
		}
		switch {
		case q.Has("before") && before == 0:
			return nil, 0, invalidField("before", "must be a positive sequence")
		case !q.Has("after") && !q.Has("before"):
			before = messaging.Latest
		}
		limit, e := queryLimit(q, messaging.MaxHistory)
		if e != nil {
			return nil, 0, e
		}
		ms, more, err := a.msg.History(r.Context(), actor(r, p), id, after, before, limit)
		return map[string]any{"messages": ms, "more": more}, http.StatusOK, err
	})
}

type readRequest struct {
	Seq *int64 `json:"seq"`
}

func (a *API) markRead(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		var req readRequest
		if e := decodeJSON(w, r, maxBodyDefault, &req); e != nil {
			return nil, 0, e
		}
		if req.Seq == nil {
			return nil, 0, invalidField("seq", "required")
		}
		st, err := a.msg.MarkRead(r.Context(), actor(r, p), id, *req.Seq)
		return st, http.StatusOK, err
	})
}

func (a *API) messageReaders(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		seq, e := pathID(r, "seq")
		if e != nil {
			return nil, 0, e
		}
		rd, err := a.msg.Readers(r.Context(), actor(r, p), id, seq)
		return rd, http.StatusOK, err
	})
}

// syncRequest is messaging.SyncRequest as JSON has it: object keys are
// strings, so conversation ids arrive as decimal strings.
type syncRequest struct {
	Convs  map[string]int64 `json:"convs"`
	Cursor string           `json:"cursor"`
	Limit  int              `json:"limit"`
}

func (a *API) syncConversations(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	var req syncRequest
	if e := decodeJSON(w, r, maxBodyDefault, &req); e != nil {
		writeAPIError(w, r, e)
		return
	}
	sr := messaging.SyncRequest{Cursor: req.Cursor, Limit: req.Limit, Convs: make(map[int64]int64, len(req.Convs))}
	for k, seq := range req.Convs {
		id, err := strconv.ParseInt(k, 10, 64)
		if err != nil || id <= 0 {
			writeAPIError(w, r, invalidField("convs", "keys are conversation ids, not "+strconv.Quote(k)))
			return
		}
		sr.Convs[id] = seq
	}
	res, err := a.msg.Sync(r.Context(), actor(r, p), sr)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}
