package mobileapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/messaging"
)

// chatWorld is a small tree with people who sign in, all set up through
// the HTTP API by the superuser:
//
//	浙江 P ─ 杭州 C ─ 西湖区 K1: alice, bob, carol, dave, frank, grace, henry
//	                └ 上城区 K2: eve
//
// Everyone in K1 sees everyone else there; nobody in K1 sees eve, nor she
// them.
type chatWorld struct {
	*testServer
	id    map[string]int64  // account ids by name
	token map[string]string // access tokens by name
}

var chatPeople = []string{"alice", "bob", "carol", "dave", "frank", "grace", "henry", "eve"}

func newChatWorld(t *testing.T) *chatWorld {
	t.Helper()
	ts := newTestServer(t)
	w := &chatWorld{testServer: ts, id: map[string]int64{}, token: map[string]string{}}
	w.token["admin"] = ts.admin
	unit := func(parent int64, name string) int64 {
		req := map[string]any{"name": name}
		if parent != 0 {
			req["parent_id"] = parent
		}
		var u struct{ ID int64 }
		w.decode(t, w.expect(t, "admin", "POST", "/v1/org/units", req, http.StatusCreated, ""), &u)
		return u.ID
	}
	p := unit(0, "浙江省")
	c := unit(p, "杭州市")
	k1, k2 := unit(c, "西湖区"), unit(c, "上城区")
	for _, name := range chatPeople {
		var acc auth.Account
		w.decode(t, w.expect(t, "admin", "POST", "/v1/accounts", map[string]any{"login": name, "display_name": name, "password": name + "-password"}, http.StatusCreated, ""), &acc)
		u := k1
		if name == "eve" {
			u = k2
		}
		w.expect(t, "admin", "POST", fmt.Sprintf("/v1/org/units/%d/members", u), map[string]any{"account_id": acc.ID, "title": "干事"}, http.StatusCreated, "")
		w.id[name] = acc.ID
		w.token[name] = ts.login(name, name+"-password", "phone").AccessToken
	}
	return w
}

// call sends a request as who (a name, or "" for none); body is nil, a
// string sent as is, or a value sent as JSON.
func (w *chatWorld) call(t *testing.T, who, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, w.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if who != "" {
		req.Header.Set("Authorization", "Bearer "+w.token[who])
	}
	resp, err := w.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

// expect sends a request and fails unless it gets status (and, for an
// error, code); it returns the body.
func (w *chatWorld) expect(t *testing.T, who, method, path string, body any, status int, code Code) []byte {
	t.Helper()
	got, out := w.call(t, who, method, path, body)
	if got != status {
		t.Fatalf("%s %s as %s: %d %s, want %d", method, path, who, got, out, status)
	}
	if code != "" {
		if c := errorCode(t, out); c != code {
			t.Fatalf("%s %s as %s: code %s, want %s: %s", method, path, who, c, code, out)
		}
		if code == CodeNotFound && !bytes.Contains(out, []byte(`"message":"not found"`)) {
			t.Fatalf("%s %s as %s: a not-found answer says more than that: %s", method, path, who, out)
		}
	}
	return out
}

func (w *chatWorld) decode(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("decoding %T: %v: %s", v, err, body)
	}
}

func (w *chatWorld) conv(t *testing.T, body []byte) messaging.Conversation {
	t.Helper()
	var c messaging.Conversation
	w.decode(t, body, &c)
	return c
}

// group creates a group owned by owner with the members.
func (w *chatWorld) group(t *testing.T, owner, title string, members ...string) messaging.Conversation {
	t.Helper()
	ids := []int64{}
	for _, m := range members {
		ids = append(ids, w.id[m])
	}
	return w.conv(t, w.expect(t, owner, "POST", "/v1/conversations", map[string]any{"title": title, "members": ids}, http.StatusCreated, ""))
}

// get reads a conversation as who.
func (w *chatWorld) get(t *testing.T, who string, conv int64) messaging.Conversation {
	t.Helper()
	return w.conv(t, w.expect(t, who, "GET", convPath(conv), nil, http.StatusOK, ""))
}

// send sends a text message and returns its sequence.
func (w *chatWorld) send(t *testing.T, who string, conv int64, clientID, text string) int64 {
	t.Helper()
	var s messaging.Sent
	w.decode(t, w.expect(t, who, "POST", convPath(conv, "/messages"), map[string]any{"client_id": clientID, "text": text}, http.StatusCreated, ""), &s)
	return s.Seq
}

type messagePage struct {
	Messages []messaging.Message
	More     bool
}

// history reads a page of messages as who, returning their sequences.
func (w *chatWorld) history(t *testing.T, who string, conv int64, query string) ([]int64, bool) {
	t.Helper()
	var p messagePage
	w.decode(t, w.expect(t, who, "GET", convPath(conv, "/messages")+query, nil, http.StatusOK, ""), &p)
	seqs := []int64{}
	for _, m := range p.Messages {
		seqs = append(seqs, m.Seq)
	}
	return seqs, p.More
}

func convPath(conv int64, rest ...string) string {
	return "/v1/conversations/" + strconv.FormatInt(conv, 10) + strings.Join(rest, "")
}

func seqsEqual(a, b []int64) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func TestMessagingDirect(t *testing.T) {
	t.Parallel()
	w := newChatWorld(t)
	open := func(who string, other any, status int, code Code) []byte {
		t.Helper()
		return w.expect(t, who, "POST", "/v1/conversations/direct", map[string]any{"account": other}, status, code)
	}
	d := w.conv(t, open("alice", w.id["bob"], http.StatusOK, ""))
	if d.Kind != "direct" || d.Peer != w.id["bob"] || len(d.Members) != 2 || d.Title != "" || d.MemberCount != 2 || d.Role != messaging.RoleMember || d.LastSeq != 0 || d.LastAt != nil {
		t.Fatalf("alice's direct conversation with bob: %+v", d)
	}
	if again := w.conv(t, open("alice", w.id["bob"], http.StatusOK, "")); again.ID != d.ID {
		t.Fatalf("opened twice: %d then %d", d.ID, again.ID)
	}
	fromBob := w.conv(t, open("bob", w.id["alice"], http.StatusOK, ""))
	if fromBob.ID != d.ID || fromBob.Peer != w.id["alice"] {
		t.Fatalf("bob's side: %+v, alice's id %d", fromBob, d.ID)
	}

	// Someone outside one's view does not exist, whichever side asks, and
	// asking creates nothing.
	open("alice", w.id["eve"], http.StatusNotFound, CodeNotFound)
	open("eve", w.id["alice"], http.StatusNotFound, CodeNotFound)
	open("alice", 999999, http.StatusNotFound, CodeNotFound)
	open("alice", w.id["alice"], http.StatusBadRequest, CodeInvalidArgument)
	open("alice", 0, http.StatusBadRequest, CodeInvalidArgument)
	var page struct{ Conversations []messaging.Conversation }
	w.decode(t, w.expect(t, "eve", "GET", "/v1/conversations", nil, http.StatusOK, ""), &page)
	if len(page.Conversations) != 0 {
		t.Fatalf("eve has conversations: %+v", page.Conversations)
	}

	// Both talk; others do not get in.
	w.send(t, "alice", d.ID, "a-1", "你好")
	w.send(t, "bob", d.ID, "b-1", "你好，alice")
	w.expect(t, "carol", "GET", convPath(d.ID), nil, http.StatusNotFound, CodeNotFound)
	w.expect(t, "carol", "POST", convPath(d.ID, "/messages"), map[string]any{"client_id": "c-1", "text": "hi"}, http.StatusNotFound, CodeNotFound)

	// A direct conversation has nothing to manage, and cannot be left.
	w.expect(t, "alice", "PATCH", convPath(d.ID), map[string]any{"title": "我们"}, http.StatusForbidden, CodePermissionDenied)
	w.expect(t, "alice", "POST", convPath(d.ID, "/members"), map[string]any{"accounts": []int64{w.id["carol"]}}, http.StatusForbidden, CodePermissionDenied)
	w.expect(t, "alice", "DELETE", convPath(d.ID, "/members/", strconv.FormatInt(w.id["alice"], 10)), nil, http.StatusForbidden, CodePermissionDenied)
	w.expect(t, "alice", "PATCH", convPath(d.ID, "/members/", strconv.FormatInt(w.id["bob"], 10)), map[string]any{"role": "admin"}, http.StatusForbidden, CodePermissionDenied)
	// Sending reads everything before: bob has read all, alice not bob's.
	if got := w.get(t, "bob", d.ID); got.LastSeq != 2 || got.Unread != 0 || got.ReadSeq != 2 || got.LastAt == nil {
		t.Fatalf("bob after two messages: %+v", got)
	}
	if got := w.get(t, "alice", d.ID); got.Unread != 1 || got.ReadSeq != 1 {
		t.Fatalf("alice after two messages: %+v", got)
	}
}

// TestMessagingGroupRoles is the permission matrix of group management:
// each action by the owner, an admin, a plain member and an outsider on a
// fresh group where alice owns, bob and carol are admins, dave and frank are
// members, and grace is not in it. Invitations are for henry.
func TestMessagingGroupRoles(t *testing.T) {
	t.Parallel()
	w := newChatWorld(t)
	actors := map[string]string{"owner": "alice", "admin": "bob", "member": "dave", "outsider": "grace"}
	targets := map[string]string{"owner": "alice", "admin": "carol", "member": "frank"}
	acct := func(name string) string { return strconv.FormatInt(w.id[name], 10) }
	role := func(r string) func(g int64, actor, target string) (int, []byte) {
		return func(g int64, actor, target string) (int, []byte) {
			return w.call(t, actor, "PATCH", convPath(g, "/members/", acct(target)), map[string]any{"role": r})
		}
	}
	actions := map[string]func(g int64, actor, target string) (int, []byte){
		"rename": func(g int64, actor, _ string) (int, []byte) {
			return w.call(t, actor, "PATCH", convPath(g), map[string]any{"title": "新名字"})
		},
		"invite": func(g int64, actor, _ string) (int, []byte) {
			return w.call(t, actor, "POST", convPath(g, "/members"), map[string]any{"accounts": []int64{w.id["henry"]}})
		},
		"remove": func(g int64, actor, target string) (int, []byte) {
			return w.call(t, actor, "DELETE", convPath(g, "/members/", acct(target)), nil)
		},
		"make admin":  role(messaging.RoleAdmin),
		"make member": role(messaging.RoleMember),
		"hand over":   role(messaging.RoleOwner),
	}
	for _, c := range []struct {
		action, actor, target string // target: a role (someone else holding it), "self" or ""
		want                  int
	}{
		{"rename", "owner", "", 200},
		{"rename", "admin", "", 200},
		{"rename", "member", "", 403},
		{"rename", "outsider", "", 404},
		{"invite", "owner", "", 200},
		{"invite", "admin", "", 200},
		{"invite", "member", "", 403},
		{"invite", "outsider", "", 404},
		{"remove", "owner", "admin", 200},
		{"remove", "owner", "member", 200},
		{"remove", "owner", "self", 200}, // leaving; the group passes to an admin
		{"remove", "admin", "owner", 403},
		{"remove", "admin", "admin", 403},
		{"remove", "admin", "member", 200},
		{"remove", "admin", "self", 200},
		{"remove", "member", "owner", 403},
		{"remove", "member", "admin", 403},
		{"remove", "member", "member", 403},
		{"remove", "member", "self", 200},
		{"remove", "outsider", "member", 404},
		{"make admin", "owner", "member", 200},
		{"make admin", "owner", "self", 400},
		{"make admin", "admin", "member", 403},
		{"make admin", "member", "member", 403},
		{"make admin", "outsider", "member", 404},
		{"make member", "owner", "admin", 200},
		{"make member", "admin", "admin", 403},
		{"hand over", "owner", "member", 200},
		{"hand over", "admin", "member", 403},
	} {
		t.Run(c.action+"/"+c.actor+"→"+c.target, func(t *testing.T) {
			g := w.group(t, "alice", "专班", "bob", "carol", "dave", "frank")
			for _, who := range []string{"bob", "carol"} {
				w.expect(t, "alice", "PATCH", convPath(g.ID, "/members/", acct(who)), map[string]any{"role": "admin"}, http.StatusOK, "")
			}
			actor, target := actors[c.actor], targets[c.target]
			if c.target == "self" {
				target = actor
			}
			got, body := actions[c.action](g.ID, actor, target)
			if got != c.want {
				t.Fatalf("%s as %s on %s: got %d %s, want %d", c.action, actor, target, got, body, c.want)
			}
			if got >= 400 {
				want := map[int]Code{400: CodeInvalidArgument, 403: CodePermissionDenied, 404: CodeNotFound}[got]
				if code := errorCode(t, body); code != want {
					t.Fatalf("code %s, want %s", code, want)
				}
				return
			}
			// What the answer shows is what the group now is.
			after := w.get(t, "alice", g.ID)
			switch c.action {
			case "remove":
				if c.target == "self" && c.actor == "owner" {
					if b := w.get(t, "bob", g.ID); b.Role != messaging.RoleOwner {
						t.Fatalf("the owner left; bob (the longest-serving admin) is %q", b.Role)
					}
				} else if after.MemberCount != 4 {
					t.Fatalf("%d members after a removal", after.MemberCount)
				}
			case "hand over":
				if t2 := w.get(t, target, g.ID); after.Role != messaging.RoleAdmin || t2.Role != messaging.RoleOwner {
					t.Fatalf("after handing over: alice %q, %s %q", after.Role, target, t2.Role)
				}
			case "make admin", "make member":
				if t2 := w.get(t, target, g.ID); t2.Role != roleOf(c.action) {
					t.Fatalf("%s is %q", target, t2.Role)
				}
			}
		})
	}
}

func roleOf(action string) string {
	if action == "make admin" {
		return messaging.RoleAdmin
	}
	return messaging.RoleMember
}

func TestMessagingGroupLifecycle(t *testing.T) {
	t.Parallel()
	w := newChatWorld(t)
	acct := func(name string) string { return strconv.FormatInt(w.id[name], 10) }
	create := func(body any, status int, code Code) []byte {
		t.Helper()
		return w.expect(t, "alice", "POST", "/v1/conversations", body, status, code)
	}

	g := w.group(t, "alice", "  防汛专班  ", "bob", "carol", "alice", "bob")
	if g.Kind != "group" || g.Title != "防汛专班" || g.MemberCount != 3 || g.Role != messaging.RoleOwner || g.CreatedBy != w.id["alice"] || g.Peer != 0 || g.Members != nil {
		t.Fatalf("created %+v", g)
	}
	// Someone outside alice's view cannot be put in, and nothing is created.
	create(map[string]any{"title": "x", "members": []int64{w.id["bob"], w.id["eve"]}}, http.StatusNotFound, CodeNotFound)
	create(map[string]any{"title": "   "}, http.StatusBadRequest, CodeInvalidArgument)
	create(map[string]any{"title": strings.Repeat("长", 101)}, http.StatusBadRequest, CodeInvalidArgument)
	create(map[string]any{"title": "x", "members": []int64{-1}}, http.StatusBadRequest, CodeInvalidArgument)
	create(map[string]any{"title": "x", "members": make([]int64, 2001)}, http.StatusRequestEntityTooLarge, CodePayloadTooLarge)
	var changes struct{ Conversations []messaging.Conversation }
	w.decode(t, w.expect(t, "alice", "GET", "/v1/conversations", nil, http.StatusOK, ""), &changes)
	if len(changes.Conversations) != 1 || changes.Conversations[0].ID != g.ID {
		t.Fatalf("alice's conversations after the refusals: %+v", changes.Conversations)
	}

	// A group of one is a group.
	solo := w.conv(t, create(map[string]any{"title": "备忘"}, http.StatusCreated, ""))
	if solo.MemberCount != 1 {
		t.Fatalf("a group of one: %+v", solo)
	}

	renamed := w.conv(t, w.expect(t, "alice", "PATCH", convPath(g.ID), map[string]any{"title": "防汛抗旱专班"}, http.StatusOK, ""))
	if renamed.Title != "防汛抗旱专班" {
		t.Fatalf("renamed: %+v", renamed)
	}
	w.send(t, "alice", g.ID, "a-1", "开会")

	// Invite: dave joins after message 1 and does not see it; eve is not
	// in alice's view; people already in are skipped.
	inv := w.conv(t, w.expect(t, "alice", "POST", convPath(g.ID, "/members"), map[string]any{"accounts": []int64{w.id["dave"], w.id["bob"]}}, http.StatusOK, ""))
	if inv.MemberCount != 4 {
		t.Fatalf("after inviting dave: %+v", inv)
	}
	w.expect(t, "alice", "POST", convPath(g.ID, "/members"), map[string]any{"accounts": []int64{w.id["eve"]}}, http.StatusNotFound, CodeNotFound)
	w.expect(t, "alice", "POST", convPath(g.ID, "/members"), map[string]any{"accounts": []int64{}}, http.StatusBadRequest, CodeInvalidArgument)
	if d := w.get(t, "dave", g.ID); d.JoinedSeq != 1 || d.Unread != 0 || d.Role != messaging.RoleMember {
		t.Fatalf("dave's view: %+v", d)
	}
	if seqs, _ := w.history(t, "dave", g.ID, ""); len(seqs) != 0 {
		t.Fatalf("dave reads messages from before he joined: %v", seqs)
	}

	// Members, a page at a time.
	var members struct {
		Members []messaging.Member
		More    bool
	}
	w.decode(t, w.expect(t, "bob", "GET", convPath(g.ID, "/members?limit=3"), nil, http.StatusOK, ""), &members)
	if len(members.Members) != 3 || !members.More {
		t.Fatalf("first page of members: %+v", members)
	}
	last := members.Members[2].Account
	w.decode(t, w.expect(t, "bob", "GET", convPath(g.ID, fmt.Sprintf("/members?limit=3&after=%d", last)), nil, http.StatusOK, ""), &members)
	if len(members.Members) != 1 || members.More || members.Members[0].Account <= last {
		t.Fatalf("second page of members: %+v", members)
	}
	w.expect(t, "grace", "GET", convPath(g.ID, "/members"), nil, http.StatusNotFound, CodeNotFound)
	w.expect(t, "bob", "GET", convPath(g.ID, "/members?limit=0"), nil, http.StatusBadRequest, CodeInvalidArgument)

	// Remove: carol is out, keeps what she could read, and can do nothing more.
	w.send(t, "bob", g.ID, "b-1", "收到")
	w.expect(t, "alice", "DELETE", convPath(g.ID, "/members/", acct("carol")), nil, http.StatusOK, "")
	w.send(t, "alice", g.ID, "a-2", "carol 走了以后")
	c := w.get(t, "carol", g.ID)
	if c.LeftSeq == nil || *c.LeftSeq != 2 || c.Role != "" || c.LastSeq != 3 || c.MemberCount != 3 {
		t.Fatalf("carol's view after removal: %+v", c)
	}
	if seqs, _ := w.history(t, "carol", g.ID, ""); !seqsEqual(seqs, []int64{2, 1}) {
		t.Fatalf("carol reads %v, want up to her removal", seqs)
	}
	w.expect(t, "carol", "POST", convPath(g.ID, "/messages"), map[string]any{"client_id": "c-1", "text": "我还在吗"}, http.StatusNotFound, CodeNotFound)
	w.expect(t, "carol", "POST", convPath(g.ID, "/read"), map[string]any{"seq": 2}, http.StatusNotFound, CodeNotFound)
	w.expect(t, "carol", "GET", convPath(g.ID, "/members"), nil, http.StatusNotFound, CodeNotFound)
	w.expect(t, "carol", "DELETE", convPath(g.ID, "/members/", acct("carol")), nil, http.StatusNotFound, CodeNotFound)
	w.expect(t, "alice", "DELETE", convPath(g.ID, "/members/", acct("carol")), nil, http.StatusNotFound, CodeNotFound)
	w.expect(t, "alice", "DELETE", convPath(g.ID, "/members/", acct("grace")), nil, http.StatusNotFound, CodeNotFound)

	// Invited back, she reads from her return on.
	w.expect(t, "alice", "POST", convPath(g.ID, "/members"), map[string]any{"accounts": []int64{w.id["carol"]}}, http.StatusOK, "")
	if c := w.get(t, "carol", g.ID); c.LeftSeq != nil || c.JoinedSeq != 3 || c.Role != messaging.RoleMember {
		t.Fatalf("carol back: %+v", c)
	}

	// Hand over: bob owns, alice is an admin and may no longer change roles.
	w.expect(t, "alice", "PATCH", convPath(g.ID, "/members/", acct("bob")), map[string]any{"role": "owner"}, http.StatusOK, "")
	if a, b := w.get(t, "alice", g.ID), w.get(t, "bob", g.ID); a.Role != messaging.RoleAdmin || b.Role != messaging.RoleOwner {
		t.Fatalf("after handing over: alice %q, bob %q", a.Role, b.Role)
	}
	w.expect(t, "alice", "PATCH", convPath(g.ID, "/members/", acct("dave")), map[string]any{"role": "admin"}, http.StatusForbidden, CodePermissionDenied)
	w.expect(t, "bob", "PATCH", convPath(g.ID, "/members/", acct("dave")), map[string]any{"role": "king"}, http.StatusBadRequest, CodeInvalidArgument)
	w.expect(t, "bob", "PATCH", convPath(g.ID, "/members/", acct("grace")), map[string]any{"role": "admin"}, http.StatusNotFound, CodeNotFound)

	// Leave: the owner who leaves hands the group to the longest-serving
	// admin (alice), and stays out.
	left := w.conv(t, w.expect(t, "bob", "DELETE", convPath(g.ID, "/members/", acct("bob")), nil, http.StatusOK, ""))
	if left.Role != "" || left.LeftSeq == nil || *left.LeftSeq != 3 {
		t.Fatalf("bob after leaving: %+v", left)
	}
	if a := w.get(t, "alice", g.ID); a.Role != messaging.RoleOwner || a.MemberCount != 3 {
		t.Fatalf("alice after bob left: %+v", a)
	}
	w.expect(t, "bob", "PATCH", convPath(g.ID), map[string]any{"title": "回来"}, http.StatusNotFound, CodeNotFound)
	w.expect(t, "bob", "DELETE", convPath(g.ID, "/members/", acct("bob")), nil, http.StatusNotFound, CodeNotFound)
}

func TestMessagingSend(t *testing.T) {
	t.Parallel()
	w := newChatWorld(t)
	g := w.group(t, "alice", "专班", "bob", "carol")
	path := convPath(g.ID, "/messages")
	send := func(who string, body any, status int, code Code) messaging.Sent {
		t.Helper()
		var s messaging.Sent
		out := w.expect(t, who, "POST", path, body, status, code)
		if code == "" {
			w.decode(t, out, &s)
		}
		return s
	}

	first := send("alice", map[string]any{"client_id": "m-1", "text": "第一条", "mentions": []int64{w.id["bob"]}}, http.StatusCreated, "")
	if first.Conv != g.ID || first.Seq != 1 || first.Duplicate || first.At.IsZero() {
		t.Fatalf("first send: %+v", first)
	}
	// A retry (the answer was lost) gets the same result, marked; another
	// message under the same client id is refused; other senders have their
	// own client ids.
	retry := send("alice", map[string]any{"client_id": "m-1", "text": "第一条", "mentions": []int64{w.id["bob"]}}, http.StatusOK, "")
	if retry.Seq != first.Seq || !retry.At.Equal(first.At) || !retry.Duplicate {
		t.Fatalf("retry: %+v, first %+v", retry, first)
	}
	send("alice", map[string]any{"client_id": "m-1", "text": "另一条"}, http.StatusConflict, CodeConflict)
	send("alice", map[string]any{"client_id": "m-1", "text": "第一条"}, http.StatusConflict, CodeConflict) // mentions differ
	if s := send("bob", map[string]any{"client_id": "m-1", "text": "第一条"}, http.StatusCreated, ""); s.Seq != 2 {
		t.Fatalf("bob's m-1: %+v", s)
	}
	payload := send("alice", map[string]any{"client_id": "m-2", "kind": "file", "payload": map[string]any{"name": "通知.pdf", "size": 1024}}, http.StatusCreated, "")
	if payload.Seq != 3 {
		t.Fatalf("payload message: %+v", payload)
	}

	// Someone not in the group: not found, and nothing is written.
	send("dave", map[string]any{"client_id": "d-1", "text": "能加我吗"}, http.StatusNotFound, CodeNotFound)
	send("eve", map[string]any{"client_id": "e-1", "text": "hi"}, http.StatusNotFound, CodeNotFound)
	w.expect(t, "alice", "POST", convPath(999999, "/messages"), map[string]any{"client_id": "x-1", "text": "hi"}, http.StatusNotFound, CodeNotFound)
	if c := w.get(t, "alice", g.ID); c.LastSeq != 3 {
		t.Fatalf("last_seq %d after refused sends, want 3", c.LastSeq)
	}
	var n int
	if err := w.api.pool.QueryRow(context.Background(), `SELECT count(*) FROM msg_messages WHERE client_id IN ('d-1', 'e-1', 'x-1')`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("refused sends wrote %d rows (err %v)", n, err)
	}

	// Bad messages, each refused with what is wrong.
	for _, c := range []struct {
		name   string
		body   any
		status int
		code   Code
		field  string
	}{
		{"no client id", map[string]any{"text": "x"}, 400, CodeInvalidArgument, "client_id"},
		{"client id with a space", map[string]any{"client_id": "a b", "text": "x"}, 400, CodeInvalidArgument, "client_id"},
		{"client id too long", map[string]any{"client_id": strings.Repeat("c", 65), "text": "x"}, 400, CodeInvalidArgument, "client_id"},
		{"empty text", map[string]any{"client_id": "b-1", "text": "  "}, 400, CodeInvalidArgument, "text"},
		{"reserved kind", map[string]any{"client_id": "b-2", "kind": "system", "payload": map[string]any{}}, 400, CodeInvalidArgument, "kind"},
		{"bad kind", map[string]any{"client_id": "b-3", "kind": "File", "payload": map[string]any{}}, 400, CodeInvalidArgument, "kind"},
		{"kind without payload", map[string]any{"client_id": "b-4", "kind": "image"}, 400, CodeInvalidArgument, "payload"},
		{"payload not an object", map[string]any{"client_id": "b-5", "kind": "image", "payload": []int{1}}, 400, CodeInvalidArgument, "payload"},
		{"mention of a non-member", map[string]any{"client_id": "b-6", "text": "@dave", "mentions": []int64{w.id["dave"]}}, 400, CodeInvalidArgument, "mentions"},
		{"mention twice", map[string]any{"client_id": "b-7", "text": "@bob", "mentions": []int64{w.id["bob"], w.id["bob"]}}, 400, CodeInvalidArgument, "mentions"},
		{"conv in the body", map[string]any{"conv": g.ID, "client_id": "b-8", "text": "x"}, 400, CodeInvalidArgument, "conv"},
		{"wrong type", map[string]any{"client_id": 8, "text": "x"}, 400, CodeInvalidArgument, "client_id"},
		{"text over 4,000 characters", map[string]any{"client_id": "b-9", "text": strings.Repeat("长", 4001)}, 413, CodePayloadTooLarge, ""},
		{"payload over 16 KiB", map[string]any{"client_id": "b-10", "kind": "file", "payload": map[string]any{"x": strings.Repeat("p", 16<<10)}}, 413, CodePayloadTooLarge, ""},
		{"over 100 mentions", map[string]any{"client_id": "b-11", "text": "x", "mentions": make([]int64, 101)}, 413, CodePayloadTooLarge, ""},
		{"body over 64 KiB", map[string]any{"client_id": "b-12", "text": "x", "payload": map[string]any{"x": strings.Repeat("p", 64<<10)}}, 413, CodePayloadTooLarge, ""},
		{"malformed JSON", `{"client_id":"b-13","text":`, 400, CodeMalformedJSON, ""},
		{"two objects", `{"client_id":"b-14","text":"x"} {}`, 400, CodeMalformedJSON, ""},
		{"not an object", `["b-15"]`, 400, CodeMalformedJSON, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := w.expect(t, "alice", "POST", path, c.body, c.status, c.code)
			if c.field != "" {
				if f := errorDetails[FieldDetail](t, out).Field; f != c.field {
					t.Errorf("details.field %q, want %q: %s", f, c.field, out)
				}
			}
		})
	}
	if c := w.get(t, "alice", g.ID); c.LastSeq != 3 {
		t.Fatalf("last_seq %d after refused sends, want 3", c.LastSeq)
	}

	// Not JSON at all.
	req, _ := http.NewRequest("POST", w.URL+path, strings.NewReader("text=hi"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+w.token["alice"])
	resp, err := w.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("a form body: %d", resp.StatusCode)
	}
	w.expect(t, "", "POST", path, map[string]any{"client_id": "n-1", "text": "x"}, http.StatusUnauthorized, CodeUnauthenticated)
	w.expect(t, "alice", "POST", "/v1/conversations/x/messages", map[string]any{"client_id": "n-1", "text": "x"}, http.StatusBadRequest, CodeInvalidArgument)
}

// TestMessagingSendConcurrent sends from several phones at once, each
// message twice: the sequences come out gapless and each message once.
func TestMessagingSendConcurrent(t *testing.T) {
	t.Parallel()
	w := newChatWorld(t)
	g := w.group(t, "alice", "专班", "bob", "carol")
	const each = 15
	errs := make(chan error, 3*each*2)
	for _, who := range []string{"alice", "bob", "carol"} {
		for i := range each {
			for range 2 {
				go func() {
					body := fmt.Sprintf(`{"client_id":"%s-%d","text":"消息 %d"}`, who, i, i)
					req, _ := http.NewRequest("POST", w.URL+convPath(g.ID, "/messages"), strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+w.token[who])
					resp, err := w.Client().Do(req)
					if err == nil {
						resp.Body.Close()
						if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
							err = fmt.Errorf("%s %d: status %d", who, i, resp.StatusCode)
						}
					}
					errs <- err
				}()
			}
		}
	}
	for range 3 * each * 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	seqs, more := w.history(t, "alice", g.ID, "?after=0&limit=200")
	if more || len(seqs) != 3*each {
		t.Fatalf("%d messages (more %v), want %d", len(seqs), more, 3*each)
	}
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("sequences %v are not 1..%d", seqs, 3*each)
		}
	}
}

func TestMessagingHistory(t *testing.T) {
	t.Parallel()
	w := newChatWorld(t)
	g := w.group(t, "alice", "专班", "bob")
	for i := 1; i <= 7; i++ {
		w.send(t, "alice", g.ID, fmt.Sprintf("h-%d", i), fmt.Sprintf("第%d条", i))
	}
	for _, c := range []struct {
		query string
		want  []int64
		more  bool
	}{
		{"", []int64{7, 6, 5, 4, 3, 2, 1}, false},
		{"?limit=3", []int64{7, 6, 5}, true},
		{"?before=5&limit=3", []int64{4, 3, 2}, true},
		{"?before=3&limit=3", []int64{2, 1}, false},
		{"?before=8", []int64{7, 6, 5, 4, 3, 2, 1}, false},
		{"?after=0&limit=3", []int64{1, 2, 3}, true},
		{"?after=3&limit=3", []int64{4, 5, 6}, true},
		{"?after=6&limit=3", []int64{7}, false},
		{"?after=7", []int64{}, false},
	} {
		got, more := w.history(t, "bob", g.ID, c.query)
		if !seqsEqual(got, c.want) || more != c.more {
			t.Errorf("%q: %v more %v, want %v more %v", c.query, got, more, c.want, c.more)
		}
	}
	var page messagePage
	w.decode(t, w.expect(t, "bob", "GET", convPath(g.ID, "/messages?after=1&limit=1"), nil, http.StatusOK, ""), &page)
	if m := page.Messages[0]; m.Conv != g.ID || m.Seq != 2 || m.Sender != w.id["alice"] || m.ClientID != "h-2" || m.Kind != "text" || m.Text != "第2条" || m.Mentions == nil || string(m.Payload) != "null" {
		t.Errorf("message 2: %+v", m)
	}

	for _, c := range []struct {
		query string
		code  Code
	}{
		{"?after=8", CodeInvalidCursor}, // the client is ahead of the server
		{"?before=9", CodeInvalidCursor},
		{"?after=1&before=5", CodeInvalidArgument},
		{"?after=-1", CodeInvalidArgument},
		{"?before=0", CodeInvalidArgument},
		{"?after=x", CodeInvalidArgument},
		{"?limit=201", CodeInvalidArgument},
		{"?limit=0", CodeInvalidArgument},
	} {
		w.expect(t, "bob", "GET", convPath(g.ID, "/messages")+c.query, nil, http.StatusBadRequest, c.code)
	}
	w.expect(t, "carol", "GET", convPath(g.ID, "/messages"), nil, http.StatusNotFound, CodeNotFound)
	w.expect(t, "bob", "GET", convPath(999999, "/messages"), nil, http.StatusNotFound, CodeNotFound)
}

func TestMessagingRead(t *testing.T) {
	t.Parallel()
	w := newChatWorld(t)
	g := w.group(t, "alice", "专班", "bob", "carol")
	for i := 1; i <= 4; i++ {
		w.send(t, "alice", g.ID, fmt.Sprintf("r-%d", i), "消息")
	}
	if b := w.get(t, "bob", g.ID); b.Unread != 4 || b.ReadSeq != 0 {
		t.Fatalf("bob before reading: %+v", b)
	}
	if a := w.get(t, "alice", g.ID); a.Unread != 0 || a.ReadSeq != 4 {
		t.Fatalf("the sender has read what she sent: %+v", a)
	}
	read := func(who string, seq any, status int, code Code) messaging.ReadState {
		t.Helper()
		var st messaging.ReadState
		out := w.expect(t, who, "POST", convPath(g.ID, "/read"), map[string]any{"seq": seq}, status, code)
		if code == "" {
			w.decode(t, out, &st)
		}
		return st
	}
	if st := read("bob", 3, http.StatusOK, ""); st != (messaging.ReadState{Conv: g.ID, ReadSeq: 3, Unread: 1}) {
		t.Fatalf("bob reads up to 3: %+v", st)
	}
	if st := read("bob", 1, http.StatusOK, ""); st.ReadSeq != 3 || st.Unread != 1 {
		t.Fatalf("the mark moved back: %+v", st)
	}
	if b := w.get(t, "bob", g.ID); b.ReadSeq != 3 || b.Unread != 1 {
		t.Fatalf("bob's conversation after reading: %+v", b)
	}
	read("bob", 5, http.StatusBadRequest, CodeInvalidCursor)
	read("bob", -1, http.StatusBadRequest, CodeInvalidArgument)
	read("bob", "3", http.StatusBadRequest, CodeInvalidArgument)
	w.expect(t, "bob", "POST", convPath(g.ID, "/read"), map[string]any{}, http.StatusBadRequest, CodeInvalidArgument)
	read("dave", 1, http.StatusNotFound, CodeNotFound)

	// Who read message 3: the sender asks.
	readers := func(who string, seq int64, status int, code Code) messaging.Readers {
		t.Helper()
		var r messaging.Readers
		out := w.expect(t, who, "GET", convPath(g.ID, fmt.Sprintf("/messages/%d/readers", seq)), nil, status, code)
		if code == "" {
			w.decode(t, out, &r)
		}
		return r
	}
	r := readers("alice", 3, http.StatusOK, "")
	if r.Conv != g.ID || r.Seq != 3 || !seqsEqual(r.Read, []int64{w.id["bob"]}) || !seqsEqual(r.Unread, []int64{w.id["carol"]}) || r.ReadCount != 1 || r.UnreadCount != 1 {
		t.Fatalf("readers of 3: %+v", r)
	}
	if r := readers("alice", 4, http.StatusOK, ""); r.ReadCount != 0 || r.UnreadCount != 2 {
		t.Fatalf("readers of 4: %+v", r)
	}
	// A member who neither sent it nor manages the group may not ask; an
	// admin may.
	readers("carol", 3, http.StatusForbidden, CodePermissionDenied)
	w.expect(t, "alice", "PATCH", convPath(g.ID, "/members/", strconv.FormatInt(w.id["carol"], 10)), map[string]any{"role": "admin"}, http.StatusOK, "")
	readers("carol", 3, http.StatusOK, "")
	readers("alice", 9, http.StatusNotFound, CodeNotFound)
	readers("dave", 3, http.StatusNotFound, CodeNotFound)
	w.expect(t, "alice", "GET", convPath(g.ID, "/messages/0/readers"), nil, http.StatusBadRequest, CodeInvalidArgument)

	// Someone who joins later is not counted for earlier messages.
	w.expect(t, "alice", "POST", convPath(g.ID, "/members"), map[string]any{"accounts": []int64{w.id["dave"]}}, http.StatusOK, "")
	if r := readers("alice", 3, http.StatusOK, ""); r.ReadCount+r.UnreadCount != 2 {
		t.Fatalf("readers of 3 after dave joined: %+v", r)
	}
	readers("dave", 3, http.StatusNotFound, CodeNotFound) // before his time
}

// changesPage is the answer of GET /v1/conversations.
type changesPage struct {
	Conversations []messaging.Conversation
	Cursor        string
	More          bool
}

// changedIDs reads one round of changes since cursor, following pages.
func (w *chatWorld) changedIDs(t *testing.T, who, cursor string) (map[int64]messaging.Conversation, string) {
	t.Helper()
	got := map[int64]messaging.Conversation{}
	for {
		var p changesPage
		w.decode(t, w.expect(t, who, "GET", "/v1/conversations?limit=2&cursor="+cursor, nil, http.StatusOK, ""), &p)
		for _, c := range p.Conversations {
			got[c.ID] = c
		}
		if p.Cursor == "" {
			t.Fatalf("no cursor: %+v", p)
		}
		cursor = p.Cursor
		if !p.More {
			return got, cursor
		}
	}
}

// quiet returns a cursor after which nothing has changed for who. A round
// may repeat conversations whose change was in flight (in any database of
// the test server) when its cursor was made, so it asks until a round is
// empty.
func (w *chatWorld) quiet(t *testing.T, who, cursor string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, next := w.changedIDs(t, who, cursor)
		if len(got) == 0 {
			return next
		}
		if time.Now().After(deadline) {
			t.Fatalf("changes keep coming: %v", got)
		}
		cursor = next
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMessagingChanges(t *testing.T) {
	t.Parallel()
	w := newChatWorld(t)
	open := func(a, b string) messaging.Conversation {
		return w.conv(t, w.expect(t, a, "POST", "/v1/conversations/direct", map[string]any{"account": w.id[b]}, http.StatusOK, ""))
	}
	d1, d2 := open("alice", "bob"), open("carol", "alice")
	g := w.group(t, "alice", "专班", "bob", "carol")
	w.send(t, "bob", g.ID, "b-1", "早")

	all, cursor := w.changedIDs(t, "alice", "")
	if len(all) != 3 || all[d1.ID].Peer != w.id["bob"] || all[d2.ID].Peer != w.id["carol"] || all[g.ID].Unread != 1 || all[g.ID].LastSeq != 1 {
		t.Fatalf("alice's conversations: %+v", all)
	}
	cursor = w.quiet(t, "alice", cursor)

	// A message, a rename, a new group, a removal: each brings its
	// conversation back, with alice's state; the others stay out.
	w.send(t, "carol", d2.ID, "c-1", "alice 在吗")
	got, cursor := w.changedIDs(t, "alice", cursor)
	if len(got) != 1 || got[d2.ID].Unread != 1 {
		t.Fatalf("after carol's message: %+v", got)
	}
	cursor = w.quiet(t, "alice", cursor)
	w.expect(t, "bob", "PATCH", convPath(g.ID), map[string]any{"title": "x"}, http.StatusForbidden, CodePermissionDenied)
	w.expect(t, "alice", "PATCH", convPath(g.ID), map[string]any{"title": "新专班"}, http.StatusOK, "")
	if got, _ := w.changedIDs(t, "alice", cursor); len(got) != 1 || got[g.ID].Title != "新专班" {
		t.Fatalf("after the rename: %+v", got)
	}
	bobCursor := w.quiet(t, "bob", "")
	w.expect(t, "alice", "DELETE", convPath(g.ID, "/members/", strconv.FormatInt(w.id["bob"], 10)), nil, http.StatusOK, "")
	got, bobCursor = w.changedIDs(t, "bob", bobCursor)
	if c, ok := got[g.ID]; len(got) != 1 || !ok || c.LeftSeq == nil || c.Role != "" {
		t.Fatalf("bob after his removal: %+v", got)
	}
	bobCursor = w.quiet(t, "bob", bobCursor)
	w.send(t, "alice", g.ID, "a-1", "bob 不在了")
	if got, _ := w.changedIDs(t, "bob", bobCursor); len(got) != 0 {
		t.Fatalf("bob hears of a group he left: %+v", got)
	}

	// A page at a time.
	var p changesPage
	w.decode(t, w.expect(t, "alice", "GET", "/v1/conversations?limit=1", nil, http.StatusOK, ""), &p)
	if len(p.Conversations) != 1 || !p.More {
		t.Fatalf("first page: %+v", p)
	}
	seen := map[int64]bool{p.Conversations[0].ID: true}
	for p.More {
		w.decode(t, w.expect(t, "alice", "GET", "/v1/conversations?limit=1&cursor="+p.Cursor, nil, http.StatusOK, ""), &p)
		for _, c := range p.Conversations {
			if seen[c.ID] {
				t.Fatalf("conversation %d twice in one round", c.ID)
			}
			seen[c.ID] = true
		}
	}
	if len(seen) != 3 {
		t.Fatalf("pages gave %v", seen)
	}

	// Cursors this server never gave out.
	future := base64.RawURLEncoding.EncodeToString([]byte("c1:999999999999:0:0"))
	for _, cur := range []string{"bm90LWEtY3Vyc29y", future, "%21%21"} {
		w.expect(t, "alice", "GET", "/v1/conversations?cursor="+cur, nil, http.StatusBadRequest, CodeInvalidCursor)
	}
	w.expect(t, "alice", "GET", "/v1/conversations?limit=501", nil, http.StatusBadRequest, CodeInvalidArgument)
	w.expect(t, "", "GET", "/v1/conversations", nil, http.StatusUnauthorized, CodeUnauthenticated)
}

func TestMessagingSync(t *testing.T) {
	t.Parallel()
	w := newChatWorld(t)
	d := w.conv(t, w.expect(t, "alice", "POST", "/v1/conversations/direct", map[string]any{"account": w.id["bob"]}, http.StatusOK, ""))
	g := w.group(t, "bob", "专班", "alice")
	for i := 1; i <= 5; i++ {
		w.send(t, "bob", g.ID, fmt.Sprintf("g-%d", i), "群消息")
	}
	w.send(t, "bob", d.ID, "d-1", "私信")
	other := w.group(t, "carol", "别的群", "dave")
	key := func(id int64) string { return strconv.FormatInt(id, 10) }
	sync := func(body any, status int, code Code) messaging.SyncResult {
		t.Helper()
		var res messaging.SyncResult
		out := w.expect(t, "alice", "POST", "/v1/sync", body, status, code)
		if code == "" {
			w.decode(t, out, &res)
		}
		return res
	}
	count := func(res messaging.SyncResult) map[int64][]int64 {
		m := map[int64][]int64{}
		for _, msg := range res.Messages {
			m[msg.Conv] = append(m[msg.Conv], msg.Seq)
		}
		return m
	}

	// A fresh phone: every conversation and every message.
	res := sync(map[string]any{}, http.StatusOK, "")
	if len(res.Conversations) != 2 || res.More || res.Cursor == "" {
		t.Fatalf("first sync: %+v", res)
	}
	if m := count(res); !seqsEqual(m[g.ID], []int64{1, 2, 3, 4, 5}) || !seqsEqual(m[d.ID], []int64{1}) {
		t.Fatalf("first sync's messages: %v", m)
	}
	// Pages of messages per conversation.
	res = sync(map[string]any{"convs": map[string]int64{key(g.ID): 1}, "limit": 2}, http.StatusOK, "")
	if m := count(res); !seqsEqual(m[g.ID], []int64{2, 3}) || !res.More {
		t.Fatalf("a page of 2 after 1: %v more %v", m, res.More)
	}
	// Up to date: nothing but what changed since the cursor.
	cursor := w.quiet(t, "alice", "")
	res = sync(map[string]any{"convs": map[string]int64{key(g.ID): 5, key(d.ID): 1}, "cursor": cursor}, http.StatusOK, "")
	if len(res.Messages) != 0 || len(res.Conversations) != 0 || res.More {
		t.Fatalf("up to date: %+v", res)
	}
	w.send(t, "bob", g.ID, "g-6", "又一条")
	res = sync(map[string]any{"convs": map[string]int64{key(g.ID): 5, key(d.ID): 1}, "cursor": cursor}, http.StatusOK, "")
	if m := count(res); !seqsEqual(m[g.ID], []int64{6}) || len(m) != 1 || len(res.Conversations) != 1 || res.Conversations[0].LastSeq != 6 {
		t.Fatalf("after message 6: %+v", res)
	}

	// A sequence from the future, a cursor never given out, a conversation
	// alice was never in, and malformed requests.
	sync(map[string]any{"convs": map[string]int64{key(g.ID): 7}}, http.StatusBadRequest, CodeInvalidCursor)
	sync(map[string]any{"cursor": base64.RawURLEncoding.EncodeToString([]byte("c1:999999999999:0:0"))}, http.StatusBadRequest, CodeInvalidCursor)
	sync(map[string]any{"cursor": "garbage"}, http.StatusBadRequest, CodeInvalidCursor)
	sync(map[string]any{"convs": map[string]int64{key(other.ID): 0}}, http.StatusNotFound, CodeNotFound)
	sync(map[string]any{"convs": map[string]int64{"999999": 0}}, http.StatusNotFound, CodeNotFound)
	sync(map[string]any{"convs": map[string]int64{"abc": 0}}, http.StatusBadRequest, CodeInvalidArgument)
	sync(map[string]any{"convs": map[string]int64{"0": 0}}, http.StatusBadRequest, CodeInvalidArgument)
	sync(map[string]any{"convs": map[string]int64{key(g.ID): -1}}, http.StatusBadRequest, CodeInvalidArgument)
	sync(map[string]any{"limit": 501}, http.StatusBadRequest, CodeInvalidArgument)
	sync(map[string]any{"since": 1}, http.StatusBadRequest, CodeInvalidArgument)
	sync(`{"convs":{"1":"x"}}`, http.StatusBadRequest, CodeInvalidArgument)
	sync(`{"convs":`, http.StatusBadRequest, CodeMalformedJSON)
	sync(`{"convs":{}, "pad":"`+strings.Repeat("x", 64<<10)+`"}`, http.StatusRequestEntityTooLarge, CodePayloadTooLarge)
}

// messagingConformance drives every messaging route through w (the tree of
// newOrgWorld), validating requests and answers against the document. The
// actors of the world hold positions in K1 and see each other; the member
// of the sibling unit K2 is invisible to them.
func messagingConformance(t *testing.T, c *conformance, w *orgWorld) {
	ctx := context.Background()
	ann, ben, cat, dan, eva := w.tokens[authz.RoleAdmin], w.tokens[authz.RoleLeader], w.tokens[authz.RoleStaff], w.tokens[authz.RoleGridWorker], w.tokens[authz.RoleAuditor]
	id := func(n int64) string { return strconv.FormatInt(n, 10) }
	accountOf := func(token string) int64 {
		_, body := c.call(t, "who", exchange{method: "GET", path: "/v1/me", token: token, status: 200})
		return decodeAs[auth.Account](t, body).ID
	}
	annID, benID, catID, danID := accountOf(ann), accountOf(ben), accountOf(cat), accountOf(dan)
	hidden := w.member["sibling"]
	const unknown = "999999"
	pad := strings.Repeat(" ", 65<<10) // whitespace: valid JSON, over 64 KiB

	var g, d messaging.Conversation
	t.Run("createConversation", func(t *testing.T) {
		const path = "/v1/conversations"
		newGroup := fmt.Sprintf(`{"title":"防汛专班","members":[%d,%d,%d]}`, benID, catID, danID)
		hdr, body := c.call(t, "create", exchange{method: "POST", path: path, token: ann, body: newGroup, hdr: []string{"Idempotency-Key", "conv-1"}, status: 201})
		g = decodeAs[messaging.Conversation](t, body)
		if hdr.Get("Location") != convPath(g.ID) || g.MemberCount != 4 {
			t.Errorf("created %+v, Location %q", g, hdr.Get("Location"))
		}
		hdr, replayed := c.call(t, "replay", exchange{method: "POST", path: path, token: ann, body: newGroup, hdr: []string{"Idempotency-Key", "conv-1"}, status: 201})
		if hdr.Get("Idempotent-Replayed") != "true" || !bytes.Equal(replayed, body) {
			t.Errorf("replay: Idempotent-Replayed %q, body %s, first %s", hdr.Get("Idempotent-Replayed"), replayed, body)
		}
		c.call(t, "key reused with another body", exchange{method: "POST", path: path, token: ann, hdr: []string{"Idempotency-Key", "conv-1"},
			body: map[string]any{"title": "另一个"}, status: 422, code: CodeIdempotencyKeyReused})
		running := `{"title":"还在建"}`
		hash := sha256.Sum256([]byte("POST " + path + "\n" + running))
		if _, err := w.api.pool.Exec(ctx, `INSERT INTO api_idempotency (account_id, key, request_hash) VALUES ($1, 'conv-running', $2)`, annID, hash[:]); err != nil {
			t.Fatal(err)
		}
		c.call(t, "same key while the first still runs", exchange{method: "POST", path: path, token: ann, body: running, hdr: []string{"Idempotency-Key", "conv-running"}, status: 409, code: CodeRequestInProgress})
		c.call(t, "without members", exchange{method: "POST", path: path, token: eva, body: map[string]any{"title": "备忘"}, status: 201})
		c.call(t, "an invisible member", exchange{method: "POST", path: path, token: ann, body: map[string]any{"title": "x", "members": []int64{benID, hidden}}, status: 404, code: CodeNotFound})
		c.call(t, "no such account", exchange{method: "POST", path: path, token: ann, body: `{"title":"x","members":[` + unknown + `]}`, status: 404, code: CodeNotFound})
		c.call(t, "blank title", exchange{method: "POST", path: path, token: ann, body: map[string]any{"title": "   "}, status: 400, code: CodeInvalidArgument})
		c.call(t, "empty title", exchange{method: "POST", path: path, token: ann, body: map[string]any{"title": ""}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no title", exchange{method: "POST", path: path, token: ann, body: map[string]any{"members": []int64{benID}}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "wrong type", exchange{method: "POST", path: path, token: ann, body: map[string]any{"title": "x", "members": "all"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "unknown field", exchange{method: "POST", path: path, token: ann, body: map[string]any{"title": "x", "kind": "direct"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "POST", path: path, token: ann, body: `{"title":`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "not JSON", exchange{method: "POST", path: path, token: ann, body: "title=x", hdr: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "over 2,000 members", exchange{method: "POST", path: path, token: ann, body: map[string]any{"title": "x", "members": make([]int64, 2001)}, status: 413, code: CodePayloadTooLarge, docRejects: true})
		c.call(t, "body over 64 KiB", exchange{method: "POST", path: path, token: ann, body: `{"title":"x"}` + pad, status: 413, code: CodePayloadTooLarge})
		c.call(t, "no token", exchange{method: "POST", path: path, body: map[string]any{"title": "x"}, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "POST", path)
	})
	if g.ID == 0 {
		t.Fatal("no group to go on with")
	}
	gp := func(rest ...string) string { return convPath(g.ID, rest...) }

	t.Run("openDirectConversation", func(t *testing.T) {
		const path = "/v1/conversations/direct"
		_, body := c.call(t, "open", exchange{method: "POST", path: path, token: ann, body: map[string]any{"account": benID}, status: 200})
		d = decodeAs[messaging.Conversation](t, body)
		_, body = c.call(t, "from the other side", exchange{method: "POST", path: path, token: ben, body: map[string]any{"account": annID}, status: 200})
		if other := decodeAs[messaging.Conversation](t, body); other.ID != d.ID || other.Peer != annID || d.Peer != benID {
			t.Errorf("two sides: %+v and %+v", d, other)
		}
		c.call(t, "an invisible person", exchange{method: "POST", path: path, token: ann, body: map[string]any{"account": hidden}, status: 404, code: CodeNotFound})
		c.call(t, "oneself", exchange{method: "POST", path: path, token: ann, body: map[string]any{"account": annID}, status: 400, code: CodeInvalidArgument})
		c.call(t, "account zero", exchange{method: "POST", path: path, token: ann, body: map[string]any{"account": 0}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "unknown field", exchange{method: "POST", path: path, token: ann, body: map[string]any{"account": benID, "title": "x"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "POST", path: path, token: ann, body: `{"account"}`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "not JSON", exchange{method: "POST", path: path, token: ann, body: "account=1", hdr: []string{"Content-Type", "text/plain"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "body over 64 KiB", exchange{method: "POST", path: path, token: ann, body: `{"account":` + id(benID) + `}` + pad, status: 413, code: CodePayloadTooLarge})
		c.call(t, "no token", exchange{method: "POST", path: path, body: map[string]any{"account": benID}, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "POST", path)
	})

	var first messaging.Sent
	t.Run("sendMessage", func(t *testing.T) {
		path := gp("/messages")
		msg := map[string]any{"client_id": "msg-1", "text": "明天九点开会 @ben", "mentions": []int64{benID}}
		_, body := c.call(t, "send", exchange{method: "POST", path: path, token: ann, body: msg, status: 201})
		first = decodeAs[messaging.Sent](t, body)
		_, body = c.call(t, "retry", exchange{method: "POST", path: path, token: ann, body: msg, status: 200})
		if again := decodeAs[messaging.Sent](t, body); again.Seq != first.Seq || !again.Duplicate {
			t.Errorf("retry: %+v, first %+v", again, first)
		}
		c.call(t, "a file", exchange{method: "POST", path: path, token: ben, body: map[string]any{"client_id": "msg-2", "kind": "file", "payload": map[string]any{"name": "预案.pdf"}}, status: 201})
		c.call(t, "in the direct conversation", exchange{method: "POST", path: convPath(d.ID, "/messages"), token: ben, body: map[string]any{"client_id": "dm-1", "text": "收到"}, status: 201})
		c.call(t, "client id reused", exchange{method: "POST", path: path, token: ann, body: map[string]any{"client_id": "msg-1", "text": "别的"}, status: 409, code: CodeConflict})
		c.call(t, "not a member", exchange{method: "POST", path: path, token: eva, body: map[string]any{"client_id": "e-1", "text": "hi"}, status: 404, code: CodeNotFound})
		c.call(t, "no such conversation", exchange{method: "POST", path: "/v1/conversations/" + unknown + "/messages", token: ann, body: map[string]any{"client_id": "x-1", "text": "hi"}, status: 404, code: CodeNotFound})
		c.call(t, "reserved kind", exchange{method: "POST", path: path, token: ann, body: map[string]any{"client_id": "x-2", "kind": "system", "payload": map[string]any{}}, status: 400, code: CodeInvalidArgument})
		c.call(t, "a mention of a non-member", exchange{method: "POST", path: path, token: ann, body: map[string]any{"client_id": "x-3", "text": "x", "mentions": []int64{hidden}}, status: 400, code: CodeInvalidArgument})
		c.call(t, "no client id", exchange{method: "POST", path: path, token: ann, body: map[string]any{"text": "x"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "unknown field", exchange{method: "POST", path: path, token: ann, body: map[string]any{"client_id": "x-4", "text": "x", "conv": g.ID}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "POST", path: path, token: ann, body: `{"client_id":"x-5",`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "text over 4,000 characters", exchange{method: "POST", path: path, token: ann, body: map[string]any{"client_id": "x-6", "text": strings.Repeat("x", 4001)}, status: 413, code: CodePayloadTooLarge, docRejects: true})
		c.call(t, "body over 64 KiB", exchange{method: "POST", path: path, token: ann, body: `{"client_id":"x-7","text":"x"}` + pad, status: 413, code: CodePayloadTooLarge})
		c.call(t, "not JSON", exchange{method: "POST", path: path, token: ann, body: "hi", hdr: []string{"Content-Type", "text/plain"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "id not a number", exchange{method: "POST", path: "/v1/conversations/x/messages", token: ann, body: map[string]any{"client_id": "x-8", "text": "x"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "POST", path: path, body: msg, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "POST", path)
	})

	t.Run("listMessages", func(t *testing.T) {
		path := gp("/messages")
		_, body := c.call(t, "newest", exchange{method: "GET", path: path, token: cat, status: 200})
		if p := decodeAs[messagePage](t, body); len(p.Messages) != 2 || p.Messages[0].Seq != 2 || string(p.Messages[1].Payload) != "null" {
			t.Errorf("newest: %s", body)
		}
		c.call(t, "forwards", exchange{method: "GET", path: path + "?after=0&limit=1", token: cat, status: 200})
		c.call(t, "backwards", exchange{method: "GET", path: path + "?before=2&limit=1", token: cat, status: 200})
		c.call(t, "from the future", exchange{method: "GET", path: path + "?after=3", token: cat, status: 400, code: CodeInvalidCursor})
		c.call(t, "both directions", exchange{method: "GET", path: path + "?after=1&before=2", token: cat, status: 400, code: CodeInvalidArgument})
		c.call(t, "limit too large", exchange{method: "GET", path: path + "?limit=201", token: cat, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "negative", exchange{method: "GET", path: path + "?after=-1", token: cat, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "not a member", exchange{method: "GET", path: path, token: eva, status: 404, code: CodeNotFound})
		c.call(t, "id not a number", exchange{method: "GET", path: "/v1/conversations/x/messages", token: cat, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: path, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", path)
	})

	t.Run("markConversationRead", func(t *testing.T) {
		path := gp("/read")
		_, body := c.call(t, "read", exchange{method: "POST", path: path, token: cat, body: map[string]any{"seq": 1}, status: 200})
		if st := decodeAs[messaging.ReadState](t, body); st.ReadSeq != 1 || st.Unread != 1 {
			t.Errorf("read: %s", body)
		}
		c.call(t, "beyond the last message", exchange{method: "POST", path: path, token: cat, body: map[string]any{"seq": 3}, status: 400, code: CodeInvalidCursor})
		c.call(t, "no seq", exchange{method: "POST", path: path, token: cat, body: map[string]any{}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "negative", exchange{method: "POST", path: path, token: cat, body: map[string]any{"seq": -1}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "POST", path: path, token: cat, body: `{"seq":1`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "not a member", exchange{method: "POST", path: path, token: eva, body: map[string]any{"seq": 1}, status: 404, code: CodeNotFound})
		c.call(t, "body over 64 KiB", exchange{method: "POST", path: path, token: cat, body: `{"seq":1}` + pad, status: 413, code: CodePayloadTooLarge})
		c.call(t, "not JSON", exchange{method: "POST", path: path, token: cat, body: "seq=1", hdr: []string{"Content-Type", "text/plain"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "no token", exchange{method: "POST", path: path, body: map[string]any{"seq": 1}, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "POST", path)
	})

	t.Run("listMessageReaders", func(t *testing.T) {
		path := gp("/messages/", id(first.Seq), "/readers")
		_, body := c.call(t, "the sender asks", exchange{method: "GET", path: path, token: ann, status: 200})
		// ben sent message 2 (sending reads what came before), cat marked 1
		// read, dan has not.
		if r := decodeAs[messaging.Readers](t, body); r.ReadCount != 2 || !seqsEqual(r.Unread, []int64{danID}) {
			t.Errorf("readers: %s", body)
		}
		c.call(t, "a plain member", exchange{method: "GET", path: path, token: cat, status: 403, code: CodePermissionDenied})
		c.call(t, "no such message", exchange{method: "GET", path: gp("/messages/9/readers"), token: ann, status: 404, code: CodeNotFound})
		c.call(t, "not a member", exchange{method: "GET", path: path, token: eva, status: 404, code: CodeNotFound})
		c.call(t, "seq not a number", exchange{method: "GET", path: gp("/messages/x/readers"), token: ann, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: path, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", path)
	})

	t.Run("getConversation", func(t *testing.T) {
		c.call(t, "a group", exchange{method: "GET", path: gp(), token: cat, status: 200})
		c.call(t, "a direct conversation", exchange{method: "GET", path: convPath(d.ID), token: ben, status: 200})
		c.call(t, "not a member", exchange{method: "GET", path: gp(), token: eva, status: 404, code: CodeNotFound})
		c.call(t, "no such conversation", exchange{method: "GET", path: "/v1/conversations/" + unknown, token: ann, status: 404, code: CodeNotFound})
		c.call(t, "id not a number", exchange{method: "GET", path: "/v1/conversations/x", token: ann, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: gp(), status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", gp())
	})

	t.Run("renameConversation", func(t *testing.T) {
		c.call(t, "by the owner", exchange{method: "PATCH", path: gp(), token: ann, body: map[string]any{"title": "防汛抗旱专班"}, status: 200})
		c.call(t, "by a member", exchange{method: "PATCH", path: gp(), token: cat, body: map[string]any{"title": "x"}, status: 403, code: CodePermissionDenied})
		c.call(t, "a direct conversation", exchange{method: "PATCH", path: convPath(d.ID), token: ann, body: map[string]any{"title": "x"}, status: 403, code: CodePermissionDenied})
		c.call(t, "not a member", exchange{method: "PATCH", path: gp(), token: eva, body: map[string]any{"title": "x"}, status: 404, code: CodeNotFound})
		c.call(t, "blank title", exchange{method: "PATCH", path: gp(), token: ann, body: map[string]any{"title": "  "}, status: 400, code: CodeInvalidArgument})
		c.call(t, "unknown field", exchange{method: "PATCH", path: gp(), token: ann, body: map[string]any{"title": "x", "avatar": "y"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "PATCH", path: gp(), token: ann, body: `{"title"`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "not JSON", exchange{method: "PATCH", path: gp(), token: ann, body: "title=x", hdr: []string{"Content-Type", "text/plain"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "body over 64 KiB", exchange{method: "PATCH", path: gp(), token: ann, body: `{"title":"x"}` + pad, status: 413, code: CodePayloadTooLarge})
		c.call(t, "no token", exchange{method: "PATCH", path: gp(), body: map[string]any{"title": "x"}, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "PATCH", gp())
	})

	t.Run("addConversationMembers", func(t *testing.T) {
		path := gp("/members")
		eve := accountOf(eva)
		c.call(t, "by the owner", exchange{method: "POST", path: path, token: ann, body: map[string]any{"accounts": []int64{eve}}, status: 200})
		c.call(t, "by a member", exchange{method: "POST", path: path, token: cat, body: map[string]any{"accounts": []int64{w.member["same"]}}, status: 403, code: CodePermissionDenied})
		c.call(t, "an invisible person", exchange{method: "POST", path: path, token: ann, body: map[string]any{"accounts": []int64{hidden}}, status: 404, code: CodeNotFound})
		c.call(t, "nobody", exchange{method: "POST", path: path, token: ann, body: map[string]any{"accounts": []int64{}}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "only oneself", exchange{method: "POST", path: path, token: ann, body: map[string]any{"accounts": []int64{annID}}, status: 400, code: CodeInvalidArgument})
		c.call(t, "malformed JSON", exchange{method: "POST", path: path, token: ann, body: `{"accounts":[`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "over 2,000", exchange{method: "POST", path: path, token: ann, body: map[string]any{"accounts": make([]int64, 2001)}, status: 413, code: CodePayloadTooLarge, docRejects: true})
		c.call(t, "body over 64 KiB", exchange{method: "POST", path: path, token: ann, body: `{"accounts":[1]}` + pad, status: 413, code: CodePayloadTooLarge})
		c.call(t, "not JSON", exchange{method: "POST", path: path, token: ann, body: "1", hdr: []string{"Content-Type", "text/plain"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "no token", exchange{method: "POST", path: path, body: map[string]any{"accounts": []int64{eve}}, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "POST", path)
	})

	t.Run("listConversationMembers", func(t *testing.T) {
		path := gp("/members")
		_, body := c.call(t, "a page", exchange{method: "GET", path: path + "?limit=2", token: cat, status: 200})
		p := decodeAs[struct {
			Members []messaging.Member
			More    bool
		}](t, body)
		if len(p.Members) != 2 || !p.More {
			t.Fatalf("first page: %s", body)
		}
		c.call(t, "the rest", exchange{method: "GET", path: path + "?after=" + id(p.Members[1].Account), token: cat, status: 200})
		c.call(t, "limit zero", exchange{method: "GET", path: path + "?limit=0", token: cat, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "not a member", exchange{method: "GET", path: convPath(d.ID, "/members"), token: cat, status: 404, code: CodeNotFound})
		c.call(t, "no token", exchange{method: "GET", path: path, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", path)
	})

	t.Run("setConversationRole", func(t *testing.T) {
		member := func(acc int64) string { return gp("/members/", id(acc)) }
		c.call(t, "make an admin", exchange{method: "PATCH", path: member(benID), token: ann, body: map[string]any{"role": "admin"}, status: 200})
		c.call(t, "by an admin", exchange{method: "PATCH", path: member(catID), token: ben, body: map[string]any{"role": "admin"}, status: 403, code: CodePermissionDenied})
		c.call(t, "not a member", exchange{method: "PATCH", path: member(hidden), token: ann, body: map[string]any{"role": "admin"}, status: 404, code: CodeNotFound})
		c.call(t, "oneself", exchange{method: "PATCH", path: member(annID), token: ann, body: map[string]any{"role": "member"}, status: 400, code: CodeInvalidArgument})
		c.call(t, "no such role", exchange{method: "PATCH", path: member(benID), token: ann, body: map[string]any{"role": "king"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "unknown field", exchange{method: "PATCH", path: member(benID), token: ann, body: map[string]any{"role": "admin", "until": "2027"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "PATCH", path: member(benID), token: ann, body: `{"role":`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "account not a number", exchange{method: "PATCH", path: gp("/members/x"), token: ann, body: map[string]any{"role": "admin"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "not JSON", exchange{method: "PATCH", path: member(benID), token: ann, body: "admin", hdr: []string{"Content-Type", "text/plain"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "body over 64 KiB", exchange{method: "PATCH", path: member(benID), token: ann, body: `{"role":"admin"}` + pad, status: 413, code: CodePayloadTooLarge})
		c.call(t, "no token", exchange{method: "PATCH", path: member(benID), body: map[string]any{"role": "admin"}, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "PATCH", member(benID))
	})

	t.Run("removeConversationMember", func(t *testing.T) {
		member := func(acc int64) string { return gp("/members/", id(acc)) }
		c.call(t, "an admin removes a member", exchange{method: "DELETE", path: member(danID), token: ben, status: 200})
		c.call(t, "a member removes another", exchange{method: "DELETE", path: member(benID), token: cat, status: 403, code: CodePermissionDenied})
		c.call(t, "leave", exchange{method: "DELETE", path: member(catID), token: cat, status: 200})
		c.call(t, "again", exchange{method: "DELETE", path: member(catID), token: cat, status: 404, code: CodeNotFound})
		c.call(t, "leave a direct conversation", exchange{method: "DELETE", path: convPath(d.ID, "/members/", id(annID)), token: ann, status: 403, code: CodePermissionDenied})
		c.call(t, "account not a number", exchange{method: "DELETE", path: gp("/members/x"), token: ann, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "DELETE", path: member(benID), status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "DELETE", member(benID))
	})

	t.Run("listConversationChanges", func(t *testing.T) {
		const path = "/v1/conversations"
		_, body := c.call(t, "all", exchange{method: "GET", path: path, token: ann, status: 200})
		all := decodeAs[changesPage](t, body)
		if len(all.Conversations) != 2 || all.More {
			t.Errorf("all: %s", body)
		}
		_, body = c.call(t, "a page", exchange{method: "GET", path: path + "?limit=1", token: ann, status: 200})
		c.call(t, "the next page", exchange{method: "GET", path: path + "?limit=1&cursor=" + decodeAs[changesPage](t, body).Cursor, token: ann, status: 200})
		c.call(t, "since", exchange{method: "GET", path: path + "?cursor=" + all.Cursor, token: ann, status: 200})
		c.call(t, "a former member", exchange{method: "GET", path: path, token: cat, status: 200})
		c.call(t, "not a cursor", exchange{method: "GET", path: path + "?cursor=bm90LWEtY3Vyc29y", token: ann, status: 400, code: CodeInvalidCursor})
		c.call(t, "limit too large", exchange{method: "GET", path: path + "?limit=501", token: ann, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: path, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", path)
	})

	t.Run("syncConversations", func(t *testing.T) {
		const path = "/v1/sync"
		_, body := c.call(t, "a fresh phone", exchange{method: "POST", path: path, token: ben, body: map[string]any{}, status: 200})
		res := decodeAs[messaging.SyncResult](t, body)
		if len(res.Conversations) != 2 || len(res.Messages) != 3 {
			t.Errorf("a fresh phone: %s", body)
		}
		c.call(t, "catching up", exchange{method: "POST", path: path, token: ben, body: map[string]any{"convs": map[string]int64{id(g.ID): 1, id(d.ID): 0}, "cursor": res.Cursor, "limit": 10}, status: 200})
		c.call(t, "a former member", exchange{method: "POST", path: path, token: cat, body: map[string]any{"convs": map[string]int64{id(g.ID): 0}}, status: 200})
		c.call(t, "from the future", exchange{method: "POST", path: path, token: ben, body: map[string]any{"convs": map[string]int64{id(g.ID): 99}}, status: 400, code: CodeInvalidCursor})
		c.call(t, "never in it", exchange{method: "POST", path: path, token: eva, body: map[string]any{"convs": map[string]int64{id(d.ID): 0}}, status: 404, code: CodeNotFound})
		c.call(t, "not a conversation id", exchange{method: "POST", path: path, token: ben, body: map[string]any{"convs": map[string]int64{"abc": 0}}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "limit too large", exchange{method: "POST", path: path, token: ben, body: map[string]any{"limit": 501}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "unknown field", exchange{method: "POST", path: path, token: ben, body: map[string]any{"since": 1}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "POST", path: path, token: ben, body: `{"convs":`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "not JSON", exchange{method: "POST", path: path, token: ben, body: "x", hdr: []string{"Content-Type", "text/plain"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "body over 64 KiB", exchange{method: "POST", path: path, token: ben, body: `{}` + pad, status: 413, code: CodePayloadTooLarge})
		c.call(t, "no token", exchange{method: "POST", path: path, body: map[string]any{}, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "POST", path)
	})

	t.Run("unrouted", func(t *testing.T) {
		c.call(t, "PUT on a conversation", exchange{method: "PUT", path: gp(), token: ann, body: map[string]any{}, status: 405, code: CodeMethodNotAllowed})
		// GET /v1/conversations/direct is left out: the document's router
		// takes it for the POST-only path (405), the server's mux for
		// GET /v1/conversations/{id} with a bad id (400).
		c.call(t, "GET on sync", exchange{method: "GET", path: "/v1/sync", token: ann, status: 405, code: CodeMethodNotAllowed})
		c.call(t, "below a message", exchange{method: "GET", path: gp("/messages/1"), token: ann, status: 404, code: CodeNotFound})
	})
}
