package messaging

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/event"
	"github.com/zhangban/zhangban/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.Main(m, auth.Migrations(), Migrations())
}

// seeAll lets everyone see everyone except the pairs in hidden.
type seeAll struct {
	known  map[int64]bool
	hidden map[[2]int64]bool
}

func (v seeAll) VisiblePeople(_ context.Context, a authz.Actor, ids []int64) (map[int64]bool, error) {
	out := map[int64]bool{}
	for _, id := range ids {
		out[id] = v.known[id] && !v.hidden[[2]int64{a.AccountID, id}]
	}
	return out, nil
}

// recorder keeps published events.
type recorder struct {
	mu     sync.Mutex
	events []event.Event
}

func (r *recorder) Publish(_ context.Context, e event.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) ofType(t string) []event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []event.Event
	for _, e := range r.events {
		if e.Type == t {
			out = append(out, e)
		}
	}
	return out
}

type fixture struct {
	svc *Service
	rec *recorder
	ids []int64 // accounts created for the test
}

func newFixture(t testing.TB, accounts int, hidden ...[2]int) *fixture {
	t.Helper()
	return newFixtureWith(t, Options{}, accounts, hidden...)
}

// newFixtureWith is newFixture with the service's options.
func newFixtureWith(t testing.TB, o Options, accounts int, hidden ...[2]int) *fixture {
	t.Helper()
	pool := testenv.DB(t)
	ctx := context.Background()
	f := &fixture{rec: &recorder{}}
	for i := range accounts {
		var id int64
		if err := pool.QueryRow(ctx, `INSERT INTO accounts (login, display_name, password_hash) VALUES ($1, $1, 'x') RETURNING id`,
			fmt.Sprintf("user%d", i)).Scan(&id); err != nil {
			t.Fatal(err)
		}
		f.ids = append(f.ids, id)
	}
	known := map[int64]bool{}
	for _, id := range f.ids {
		known[id] = true
	}
	h := map[[2]int64]bool{}
	for _, p := range hidden {
		h[[2]int64{f.ids[p[0]], f.ids[p[1]]}] = true
	}
	f.svc = New(pool, seeAll{known, h}, f.rec, slog.New(slog.NewTextHandler(io.Discard, nil)), o)
	t.Cleanup(func() { f.svc.Close(context.Background()) })
	return f
}

func (f *fixture) actor(i int) authz.Actor { return authz.Actor{AccountID: f.ids[i]} }

func (f *fixture) send(t *testing.T, who int, conv int64, text string) Sent {
	t.Helper()
	s, err := f.svc.Send(context.Background(), f.actor(who), SendRequest{Conv: conv, ClientID: fmt.Sprintf("%d-%s", who, text), Text: text})
	if err != nil {
		t.Fatalf("send %q: %v", text, err)
	}
	return s
}

func TestDirect(t *testing.T) {
	f := newFixture(t, 3, [2]int{0, 2})
	ctx := context.Background()
	c, err := f.svc.Direct(ctx, f.actor(0), f.ids[1])
	if err != nil {
		t.Fatal(err)
	}
	if c.Kind != "direct" || c.Peer != f.ids[1] || c.MemberCount != 2 || c.Role != RoleMember {
		t.Fatalf("direct conversation: %+v", c)
	}
	again, err := f.svc.Direct(ctx, f.actor(1), f.ids[0])
	if err != nil || again.ID != c.ID || again.Peer != f.ids[0] {
		t.Fatalf("the other side gets the same conversation: %+v %v", again, err)
	}
	if n := len(f.rec.ofType(event.TypeConversation)); n != 1 {
		t.Errorf("created events: %d, want 1", n)
	}
	if _, err := f.svc.Direct(ctx, f.actor(0), f.ids[0]); !errors.Is(err, ErrInvalid) {
		t.Errorf("direct with oneself: %v", err)
	}
	if _, err := f.svc.Direct(ctx, f.actor(0), f.ids[2]); !errors.Is(err, ErrNotFound) {
		t.Errorf("direct with someone hidden: %v", err)
	}
	if _, err := f.svc.Direct(ctx, f.actor(0), 999999); !errors.Is(err, ErrNotFound) {
		t.Errorf("direct with an unknown account: %v", err)
	}
	if _, err := f.svc.Get(ctx, f.actor(2), c.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("an outsider gets a direct conversation: %v", err)
	}
}

func TestSendIdempotentAndValidated(t *testing.T) {
	f := newFixture(t, 3)
	ctx := context.Background()
	c, _ := f.svc.Direct(ctx, f.actor(0), f.ids[1])
	a := f.actor(0)
	first, err := f.svc.Send(ctx, a, SendRequest{Conv: c.ID, ClientID: "m1", Text: "你好", Mentions: []int64{f.ids[1]}})
	if err != nil || first.Seq != 1 || first.Duplicate {
		t.Fatalf("first send: %+v %v", first, err)
	}
	retry, err := f.svc.Send(ctx, a, SendRequest{Conv: c.ID, ClientID: "m1", Text: "你好", Mentions: []int64{f.ids[1]}})
	if err != nil || retry.Seq != 1 || !retry.Duplicate || !retry.At.Equal(first.At) {
		t.Fatalf("retry: %+v %v (first %+v)", retry, err, first)
	}
	if _, err := f.svc.Send(ctx, a, SendRequest{Conv: c.ID, ClientID: "m1", Text: "something else"}); !errors.Is(err, ErrConflict) {
		t.Errorf("reused client id: %v", err)
	}
	second := f.send(t, 1, c.ID, "second")
	if second.Seq != 2 {
		t.Errorf("second seq %d", second.Seq)
	}
	if n := len(f.rec.ofType(event.TypeMessage)); n != 2 {
		t.Errorf("message events %d, want 2 (no event for a retry)", n)
	}
	var m Message
	json.Unmarshal(f.rec.ofType(event.TypeMessage)[0].Data, &m)
	if m.Text != "你好" || m.Seq != 1 || m.Sender != f.ids[0] || m.Conv != c.ID {
		t.Errorf("event data %+v", m)
	}

	bad := []struct {
		name string
		req  SendRequest
		want error
	}{
		{"not a member", SendRequest{Conv: c.ID, ClientID: "x1", Text: "hi"}, ErrNotFound},
		{"unknown conversation", SendRequest{Conv: 424242, ClientID: "x2", Text: "hi"}, ErrNotFound},
		{"no client id", SendRequest{Conv: c.ID, Text: "hi"}, ErrInvalid},
		{"client id with space", SendRequest{Conv: c.ID, ClientID: "a b", Text: "hi"}, ErrInvalid},
		{"empty text", SendRequest{Conv: c.ID, ClientID: "x3", Text: "  "}, ErrInvalid},
		{"text too long", SendRequest{Conv: c.ID, ClientID: "x4", Text: strings.Repeat("字", MaxTextRunes+1)}, ErrTooLarge},
		{"bad kind", SendRequest{Conv: c.ID, ClientID: "x5", Kind: "Image!", Payload: json.RawMessage(`{}`)}, ErrInvalid},
		{"reserved kind", SendRequest{Conv: c.ID, ClientID: "x6", Kind: "system", Payload: json.RawMessage(`{}`)}, ErrInvalid},
		{"payload not an object", SendRequest{Conv: c.ID, ClientID: "x7", Kind: "image", Payload: json.RawMessage(`[1]`)}, ErrInvalid},
		{"kind without payload", SendRequest{Conv: c.ID, ClientID: "x8", Kind: "image"}, ErrInvalid},
		{"payload too large", SendRequest{Conv: c.ID, ClientID: "x9", Kind: "file", Payload: json.RawMessage(`{"a":"` + strings.Repeat("x", MaxPayloadBytes) + `"}`)}, ErrTooLarge},
		{"mention of a non-member", SendRequest{Conv: c.ID, ClientID: "x10", Text: "hi", Mentions: []int64{f.ids[2]}}, ErrInvalid},
		{"mention twice", SendRequest{Conv: c.ID, ClientID: "x11", Text: "hi", Mentions: []int64{f.ids[1], f.ids[1]}}, ErrInvalid},
		{"invalid UTF-8", SendRequest{Conv: c.ID, ClientID: "x12", Text: "\xff"}, ErrInvalid},
		{"NUL in text", SendRequest{Conv: c.ID, ClientID: "x13", Text: "a\x00b"}, ErrInvalid},
		{"NUL in payload", SendRequest{Conv: c.ID, ClientID: "x14", Kind: "file", Payload: json.RawMessage(`{"a":["x\u0000"]}`)}, ErrInvalid},
	}
	for _, tc := range bad {
		who := a
		if tc.name == "not a member" {
			who = f.actor(2)
		}
		if _, err := f.svc.Send(ctx, who, tc.req); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	ms, _, _ := f.svc.History(ctx, a, c.ID, 0, 0, 50)
	if len(ms) != 2 {
		t.Errorf("bad sends wrote something: %d messages", len(ms))
	}
	img, err := f.svc.Send(ctx, a, SendRequest{Conv: c.ID, ClientID: "img", Kind: "image", Payload: json.RawMessage(`{ "url": "https://x/1.png", "w": 10 }`)})
	if err != nil || img.Seq != 3 {
		t.Fatalf("typed message: %+v %v", img, err)
	}
	ms, _, _ = f.svc.History(ctx, a, c.ID, 2, 0, 50)
	if len(ms) != 1 || ms[0].Kind != "image" || string(ms[0].Payload) != `{"w": 10, "url": "https://x/1.png"}` && string(ms[0].Payload) != `{"url":"https://x/1.png","w":10}` {
		t.Errorf("typed message read back: %+v %s", ms, ms[0].Payload)
	}
}

// TestConcurrentSendsAreGapless sends from many goroutines into a few
// conversations, with every message also retried concurrently, and checks
// that each conversation holds 1..N exactly once: with the default single
// committer, and with several, each taking the conversations that map to
// it.
func TestConcurrentSendsAreGapless(t *testing.T) {
	for _, committers := range []int{1, 3} {
		t.Run(fmt.Sprintf("committers=%d", committers), func(t *testing.T) {
			testConcurrentSendsAreGapless(t, newFixtureWith(t, Options{Committers: committers}, 4))
		})
	}
}

func testConcurrentSendsAreGapless(t *testing.T, f *fixture) {
	ctx := context.Background()
	g, err := f.svc.CreateGroup(ctx, f.actor(0), "并发", []int64{f.ids[1], f.ids[2], f.ids[3]})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := f.svc.Direct(ctx, f.actor(0), f.ids[1])
	const per = 60
	var wg sync.WaitGroup
	var mu sync.Mutex
	seqs := map[int64]map[int64]string{g.ID: {}, d.ID: {}}
	for w := range 4 {
		for _, conv := range []int64{g.ID, d.ID} {
			if conv == d.ID && w > 1 {
				continue
			}
			for copyN := range 2 { // the same sends twice, racing
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range per {
						id := fmt.Sprintf("w%d-%d", conv, i)
						r, err := f.svc.Send(ctx, f.actor(w), SendRequest{Conv: conv, ClientID: id, Text: id})
						if err != nil {
							t.Errorf("send %s (copy %d): %v", id, copyN, err)
							return
						}
						mu.Lock()
						key := fmt.Sprintf("%d/%s", w, id)
						if prev, ok := seqs[conv][r.Seq]; ok && prev != key {
							t.Errorf("seq %d of %d given to %s and %s", r.Seq, conv, prev, key)
						}
						seqs[conv][r.Seq] = key
						mu.Unlock()
					}
				}()
			}
		}
	}
	wg.Wait()
	for conv, want := range map[int64]int{g.ID: 4 * per, d.ID: 2 * per} {
		var all []Message
		after := int64(0)
		for {
			ms, more, err := f.svc.History(ctx, f.actor(0), conv, after, 0, MaxHistory)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, ms...)
			if !more {
				break
			}
			after = ms[len(ms)-1].Seq
		}
		if len(all) != want {
			t.Errorf("conversation %d: %d messages, want %d", conv, len(all), want)
		}
		for i, m := range all {
			if m.Seq != int64(i+1) {
				t.Fatalf("conversation %d: message %d has seq %d", conv, i, m.Seq)
			}
		}
		if n := len(f.rec.ofType(event.TypeMessage)); n != 6*per {
			t.Errorf("message events %d, want %d", n, 6*per)
		}
	}
}

func TestGroupLifecycle(t *testing.T) {
	f := newFixture(t, 5, [2]int{0, 4})
	ctx := context.Background()
	owner, admin, member, other := f.actor(0), f.actor(1), f.actor(2), f.actor(3)
	if _, err := f.svc.CreateGroup(ctx, owner, "组", []int64{f.ids[4]}); !errors.Is(err, ErrNotFound) {
		t.Errorf("group with someone hidden: %v", err)
	}
	if _, err := f.svc.CreateGroup(ctx, owner, " ", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("group without a title: %v", err)
	}
	big := make([]int64, MaxGroupMembers)
	for i := range big {
		big[i] = int64(i + 1000)
	}
	if _, err := f.svc.CreateGroup(ctx, owner, "big", big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("group over the limit: %v", err)
	}
	g, err := f.svc.CreateGroup(ctx, owner, "西湖区工作群", []int64{f.ids[1], f.ids[2], f.ids[0]})
	if err != nil || g.MemberCount != 3 || g.Role != RoleOwner {
		t.Fatalf("create: %+v %v", g, err)
	}
	if _, err := f.svc.SetRole(ctx, owner, g.ID, f.ids[1], RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Rename(ctx, member, g.ID, "x"); !errors.Is(err, ErrForbidden) {
		t.Errorf("member renames: %v", err)
	}
	if _, err := f.svc.Rename(ctx, other, g.ID, "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("outsider renames: %v", err)
	}
	if c, err := f.svc.Rename(ctx, admin, g.ID, "新名字"); err != nil || c.Title != "新名字" {
		t.Errorf("admin renames: %+v %v", c, err)
	}
	f.send(t, 0, g.ID, "one")
	f.send(t, 1, g.ID, "two")
	if _, err := f.svc.AddMembers(ctx, member, g.ID, []int64{f.ids[3]}); !errors.Is(err, ErrForbidden) {
		t.Errorf("member invites: %v", err)
	}
	c, err := f.svc.AddMembers(ctx, admin, g.ID, []int64{f.ids[3], f.ids[2]})
	if err != nil || c.MemberCount != 4 {
		t.Fatalf("invite: %+v %v", c, err)
	}
	joined := f.rec.ofType(event.TypeConversation)
	if last := joined[len(joined)-1]; len(last.Join) != 1 || last.Join[0] != f.ids[3] {
		t.Errorf("invite event joins %v, want only the new member", last.Join)
	}
	// The newcomer sees only what came after joining.
	if ms, _, _ := f.svc.History(ctx, other, g.ID, 0, 0, 50); len(ms) != 0 {
		t.Errorf("newcomer sees %d earlier messages", len(ms))
	}
	f.send(t, 3, g.ID, "three")
	if ms, _, _ := f.svc.History(ctx, other, g.ID, 0, 0, 50); len(ms) != 1 || ms[0].Seq != 3 {
		t.Errorf("newcomer history: %+v", ms)
	}
	if _, err := f.svc.RemoveMember(ctx, admin, g.ID, f.ids[0]); !errors.Is(err, ErrForbidden) {
		t.Errorf("admin removes the owner: %v", err)
	}
	if _, err := f.svc.RemoveMember(ctx, admin, g.ID, f.ids[2]); err != nil {
		t.Fatalf("admin removes a member: %v", err)
	}
	removed := f.rec.ofType(event.TypeConversation)
	if last := removed[len(removed)-1]; len(last.Leave) != 1 || last.Leave[0] != f.ids[2] || len(last.To) != 1 {
		t.Errorf("removal event: %+v", last)
	}
	if _, err := f.svc.Send(ctx, member, SendRequest{Conv: g.ID, ClientID: "late", Text: "hi"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed member sends: %v", err)
	}
	f.send(t, 0, g.ID, "four")
	ms, _, err := f.svc.History(ctx, member, g.ID, 0, Latest, 50)
	if err != nil || len(ms) != 3 || ms[0].Seq != 3 {
		t.Errorf("a former member reads up to the removal: %d messages, %v", len(ms), err)
	}
	gm, err := f.svc.Get(ctx, member, g.ID)
	if err != nil || gm.LeftSeq == nil || *gm.LeftSeq != 3 || gm.Role != "" {
		t.Errorf("former member's view: %+v %v", gm, err)
	}
	// The owner leaves: the admin takes over.
	if _, err := f.svc.RemoveMember(ctx, owner, g.ID, f.ids[0]); err != nil {
		t.Fatal(err)
	}
	if c, _ := f.svc.Get(ctx, admin, g.ID); c.Role != RoleOwner || c.MemberCount != 2 {
		t.Errorf("after the owner left: %+v", c)
	}
	d, _ := f.svc.Direct(ctx, owner, f.ids[1])
	if _, err := f.svc.RemoveMember(ctx, owner, d.ID, f.ids[0]); !errors.Is(err, ErrForbidden) {
		t.Errorf("leaving a direct conversation: %v", err)
	}
	if _, err := f.svc.Rename(ctx, owner, d.ID, "x"); !errors.Is(err, ErrForbidden) {
		t.Errorf("renaming a direct conversation: %v", err)
	}
	// Members list.
	list, more, err := f.svc.Members(ctx, admin, g.ID, 0, 10)
	if err != nil || more || len(list) != 2 {
		t.Errorf("members: %+v %v %v", list, more, err)
	}
	if _, _, err := f.svc.Members(ctx, member, g.ID, 0, 10); !errors.Is(err, ErrNotFound) {
		t.Errorf("former member lists members: %v", err)
	}
}

func TestReadCursors(t *testing.T) {
	f := newFixture(t, 4)
	ctx := context.Background()
	g, _ := f.svc.CreateGroup(ctx, f.actor(0), "读", []int64{f.ids[1], f.ids[2], f.ids[3]})
	for i := range 5 {
		f.send(t, 0, g.ID, fmt.Sprint("m", i))
	}
	if c, _ := f.svc.Get(ctx, f.actor(0), g.ID); c.Unread != 0 || c.ReadSeq != 5 {
		t.Errorf("the sender has read their own messages: %+v", c)
	}
	if c, _ := f.svc.Get(ctx, f.actor(1), g.ID); c.Unread != 5 {
		t.Errorf("unread before reading: %d", c.Unread)
	}
	_, cur, _, _ := f.svc.Changes(ctx, f.actor(1), "", 100)
	st, err := f.svc.MarkRead(ctx, f.actor(1), g.ID, 3)
	if err != nil || st.ReadSeq != 3 || st.Unread != 2 {
		t.Fatalf("mark read: %+v %v", st, err)
	}
	if cs, _, _, _ := f.svc.Changes(ctx, f.actor(1), cur, 100); len(cs) != 1 || cs[0].ReadSeq != 3 || cs[0].Unread != 2 {
		t.Errorf("a read mark reaches the user's other devices through changes: %+v", cs)
	}
	if st, _ := f.svc.MarkRead(ctx, f.actor(1), g.ID, 1); st.ReadSeq != 3 {
		t.Errorf("read mark went back: %+v", st)
	}
	if _, err := f.svc.MarkRead(ctx, f.actor(1), g.ID, 6); !errors.Is(err, ErrInvalidCursor) {
		t.Errorf("read beyond the end: %v", err)
	}
	if _, err := f.svc.MarkRead(ctx, authz.Actor{AccountID: 999}, g.ID, 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("read by an outsider: %v", err)
	}
	f.svc.MarkRead(ctx, f.actor(2), g.ID, 5)
	reads := f.rec.ofType(event.TypeRead)
	if len(reads) != 2 || len(reads[0].To) != 1 || reads[0].To[0] != f.ids[1] {
		t.Errorf("read events (own devices only in a group): %+v", reads)
	}
	r, err := f.svc.Readers(ctx, f.actor(0), g.ID, 3)
	if err != nil || r.ReadCount != 2 || r.UnreadCount != 1 || r.Unread[0] != f.ids[3] {
		t.Errorf("readers of 3: %+v %v", r, err)
	}
	if _, err := f.svc.Readers(ctx, f.actor(1), g.ID, 3); !errors.Is(err, ErrForbidden) {
		t.Errorf("a member asks who read someone else's message: %v", err)
	}
	if _, err := f.svc.Readers(ctx, f.actor(0), g.ID, 99); !errors.Is(err, ErrNotFound) {
		t.Errorf("readers of an unknown message: %v", err)
	}
	d, _ := f.svc.Direct(ctx, f.actor(0), f.ids[1])
	f.send(t, 0, d.ID, "hi")
	f.svc.MarkRead(ctx, f.actor(1), d.ID, 1)
	reads = f.rec.ofType(event.TypeRead)
	if last := reads[len(reads)-1]; len(last.To) != 2 {
		t.Errorf("direct read receipt goes to both: %+v", last)
	}
}

func TestChangesAndSync(t *testing.T) {
	f := newFixture(t, 3)
	ctx := context.Background()
	a := f.actor(0)
	d1, _ := f.svc.Direct(ctx, a, f.ids[1])
	d2, _ := f.svc.Direct(ctx, a, f.ids[2])
	for i := range 7 {
		f.send(t, 1, d1.ID, fmt.Sprint("a", i))
	}
	f.send(t, 2, d2.ID, "b")

	res, err := f.svc.Sync(ctx, a, SyncRequest{Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Conversations) != 2 || !res.More || len(res.Messages) != 6 {
		t.Fatalf("first sync: %d conversations, %d messages, more %v", len(res.Conversations), len(res.Messages), res.More)
	}
	have := map[int64]int64{}
	for _, m := range res.Messages {
		if m.Seq != have[m.Conv]+1 {
			t.Fatalf("sync out of order: %d after %d", m.Seq, have[m.Conv])
		}
		have[m.Conv] = m.Seq
	}
	res, err = f.svc.Sync(ctx, a, SyncRequest{Convs: have, Cursor: res.Cursor, Limit: 5})
	if err != nil || res.More || len(res.Messages) != 2 || res.Messages[0].Seq != 6 {
		t.Fatalf("second sync: %+v %v", res, err)
	}
	for _, m := range res.Messages {
		have[m.Conv] = m.Seq
	}
	quiet, err := f.svc.Sync(ctx, a, SyncRequest{Convs: have, Cursor: res.Cursor})
	if err != nil || len(quiet.Conversations) != 0 || len(quiet.Messages) != 0 {
		t.Fatalf("nothing changed, yet: %+v %v", quiet, err)
	}
	f.send(t, 2, d2.ID, "c")
	next, err := f.svc.Sync(ctx, a, SyncRequest{Convs: have, Cursor: quiet.Cursor})
	if err != nil || len(next.Conversations) != 1 || next.Conversations[0].ID != d2.ID || len(next.Messages) != 1 || next.Messages[0].Seq != 2 {
		t.Fatalf("after one message: %+v %v", next, err)
	}
	if next.Conversations[0].Unread != 2 {
		t.Errorf("unread in sync: %d", next.Conversations[0].Unread)
	}

	// Bad input.
	if _, err := f.svc.Sync(ctx, a, SyncRequest{Convs: map[int64]int64{d1.ID: 99}}); !errors.Is(err, ErrInvalidCursor) {
		t.Errorf("sequence from the future: %v", err)
	}
	g, _ := f.svc.CreateGroup(ctx, f.actor(1), "not mine", []int64{f.ids[2]})
	if _, err := f.svc.Sync(ctx, a, SyncRequest{Convs: map[int64]int64{g.ID: 0}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("sync of someone else's conversation: %v", err)
	}
	for _, c := range []string{"garbage", cursor{since: 1 << 40}.String(), "YzE6MTox"} {
		if _, err := f.svc.Sync(ctx, a, SyncRequest{Cursor: c}); !errors.Is(err, ErrInvalidCursor) {
			t.Errorf("cursor %q: %v", c, err)
		}
	}
	if _, err := f.svc.Sync(ctx, a, SyncRequest{Limit: MaxSyncPerConv + 1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("limit over the maximum: %v", err)
	}
}

func TestChangesPagesAndMembership(t *testing.T) {
	f := newFixture(t, 2)
	ctx := context.Background()
	var groups []int64
	for i := range 5 {
		g, err := f.svc.CreateGroup(ctx, f.actor(0), fmt.Sprint("g", i), []int64{f.ids[1]})
		if err != nil {
			t.Fatal(err)
		}
		groups = append(groups, g.ID)
	}
	seen := map[int64]bool{}
	cur := ""
	for range 10 {
		cs, next, more, err := f.svc.Changes(ctx, f.actor(1), cur, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			seen[c.ID] = true
		}
		cur = next
		if !more {
			break
		}
	}
	if len(seen) != 5 {
		t.Errorf("paged changes saw %d of 5 groups", len(seen))
	}
	// Removal reaches the removed member once; later messages do not.
	f.svc.RemoveMember(ctx, f.actor(0), groups[0], f.ids[1])
	cs, cur2, _, _ := f.svc.Changes(ctx, f.actor(1), cur, 10)
	if len(cs) != 1 || cs[0].LeftSeq == nil {
		t.Fatalf("removal in changes: %+v", cs)
	}
	f.send(t, 0, groups[0], "after")
	if cs, _, _, _ := f.svc.Changes(ctx, f.actor(1), cur2, 10); len(cs) != 0 {
		t.Errorf("a former member hears of later messages: %+v", cs)
	}
}

// TestEnqueueCallsBackOnce checks the call-back of a send: one call with
// the outcome, after the message's event went out, and none when Enqueue
// itself refuses the send.
func TestEnqueueCallsBackOnce(t *testing.T) {
	f := newFixture(t, 2)
	ctx := context.Background()
	d, _ := f.svc.Direct(ctx, f.actor(0), f.ids[1])
	type outcome struct {
		sent   Sent
		err    error
		events int // message events published when it was called
	}
	enqueue := func(ctx context.Context, r SendRequest) (chan outcome, error) {
		ch := make(chan outcome, 2)
		err := f.svc.Enqueue(ctx, f.actor(0), r, func(s Sent, err error) {
			ch <- outcome{s, err, len(f.rec.ofType(event.TypeMessage))}
		})
		return ch, err
	}
	once := func(ch chan outcome) outcome {
		t.Helper()
		o := <-ch
		select {
		case again := <-ch:
			t.Fatalf("called back twice: %+v, then %+v", o, again)
		case <-time.After(50 * time.Millisecond):
		}
		return o
	}
	ch, err := enqueue(ctx, SendRequest{Conv: d.ID, ClientID: "f1", Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if o := once(ch); o.err != nil || o.sent.Seq != 1 || o.sent.Duplicate || o.events != 1 {
		t.Errorf("send: %+v (want seq 1, its event published before the call)", o)
	}
	ch, _ = enqueue(ctx, SendRequest{Conv: d.ID, ClientID: "f1", Text: "hi"})
	if o := once(ch); o.err != nil || o.sent.Seq != 1 || !o.sent.Duplicate {
		t.Errorf("retry: %+v", o)
	}
	ch, _ = enqueue(ctx, SendRequest{Conv: d.ID, ClientID: "f1", Text: "changed"})
	if o := once(ch); !errors.Is(o.err, ErrConflict) {
		t.Errorf("reused client id: %+v", o)
	}
	ch, err = enqueue(ctx, SendRequest{Conv: d.ID, ClientID: "f2", Text: " "})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("empty text: %v", err)
	}
	select {
	case o := <-ch:
		t.Errorf("a refused send was called back: %+v", o)
	case <-time.After(50 * time.Millisecond):
	}
	// A send whose context ended before it was queued or committed: an
	// error from one or the other, never both, and nothing stored.
	ended, cancel := context.WithCancel(ctx)
	cancel()
	for i := range 20 {
		ch, err := enqueue(ended, SendRequest{Conv: d.ID, ClientID: fmt.Sprintf("c%d", i), Text: "late"})
		if err == nil {
			if o := once(ch); !errors.Is(o.err, context.Canceled) {
				t.Errorf("ended context, queued: %+v", o)
			}
		} else if !errors.Is(err, context.Canceled) {
			t.Errorf("ended context: %v", err)
		}
	}
	if ms, _, _ := f.svc.History(ctx, f.actor(0), d.ID, 0, 0, 50); len(ms) != 1 {
		t.Errorf("%d messages stored, want 1", len(ms))
	}
}

func TestCloseRefusesSends(t *testing.T) {
	f := newFixture(t, 2)
	ctx := context.Background()
	d, _ := f.svc.Direct(ctx, f.actor(0), f.ids[1])
	f.svc.Close(ctx)
	f.svc.Close(ctx) // idempotent
	if _, err := f.svc.Send(ctx, f.actor(0), SendRequest{Conv: d.ID, ClientID: "z", Text: "z"}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("send after close: %v", err)
	}
}

// TestSendBatchOutcomes commits one batch holding every outcome a send can
// have, as the committer does when sends arrive together, and checks each
// answer, what was stored and what was published.
func TestSendBatchOutcomes(t *testing.T) {
	f := newFixture(t, 4)
	ctx := context.Background()
	g, err := f.svc.CreateGroup(ctx, f.actor(0), "批量", []int64{f.ids[1], f.ids[2]})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := f.svc.Direct(ctx, f.actor(0), f.ids[1])
	old, err := f.svc.Send(ctx, f.actor(0), SendRequest{Conv: g.ID, ClientID: "old", Text: "old"})
	if err != nil {
		t.Fatal(err)
	}
	before := len(f.rec.ofType(event.TypeMessage))
	calls := map[*pending]int{} // answers each send got
	mk := func(who int, r SendRequest) *pending {
		if err := r.validate(); err != nil {
			t.Fatal(err)
		}
		p := &pending{ctx: ctx, sender: f.ids[who], req: r, digest: r.digest()}
		p.then = func(Sent, error) { calls[p]++ }
		return p
	}
	batch := []*pending{
		mk(0, SendRequest{Conv: g.ID, ClientID: "a", Text: "one", Mentions: []int64{f.ids[2], f.ids[1]}}),     // 0 sent, seq 2
		mk(1, SendRequest{Conv: g.ID, ClientID: "b", Text: "two"}),                                            // 1 sent, seq 3
		mk(0, SendRequest{Conv: g.ID, ClientID: "a", Text: "one", Mentions: []int64{f.ids[2], f.ids[1]}}),     // 2 repeat of 0
		mk(0, SendRequest{Conv: g.ID, ClientID: "a", Text: "not one"}),                                        // 3 reuse of 0's id
		mk(0, SendRequest{Conv: g.ID, ClientID: "old", Text: "changed"}),                                      // 4 reuse of an earlier id
		mk(0, SendRequest{Conv: g.ID, ClientID: "old", Text: "old"}),                                          // 5 retry of the earlier send
		mk(3, SendRequest{Conv: g.ID, ClientID: "c", Text: "outsider"}),                                       // 6 not a member
		mk(3, SendRequest{Conv: g.ID, ClientID: "c", Text: "outsider"}),                                       // 7 its repeat
		mk(0, SendRequest{Conv: g.ID, ClientID: "e", Text: "hi", Mentions: []int64{f.ids[1], f.ids[3]}}),      // 8 mentions an outsider
		mk(0, SendRequest{Conv: d.ID, ClientID: "f", Kind: "image", Payload: json.RawMessage(`{"url":"u"}`)}), // 9 sent, seq 1
		mk(1, SendRequest{Conv: d.ID, ClientID: "g", Text: "back"}),                                           // 10 sent, seq 2
		mk(1, SendRequest{Conv: 987654, ClientID: "h", Text: "nowhere"}),                                      // 11 no such conversation
	}
	f.svc.commitBatch(batch)
	for i, p := range batch {
		if calls[p] != 1 {
			t.Fatalf("send %d answered %d times, want once", i, calls[p])
		}
	}
	sent := func(i int, conv, seq int64, dup bool) {
		t.Helper()
		if p := batch[i]; p.err != nil || p.res.Conv != conv || p.res.Seq != seq || p.res.Duplicate != dup {
			t.Errorf("send %d: %+v %v, want conv %d seq %d duplicate %v", i, p.res, p.err, conv, seq, dup)
		}
	}
	failed := func(i int, want error, text string) {
		t.Helper()
		if p := batch[i]; !errors.Is(p.err, want) || !strings.Contains(p.err.Error(), text) || p.res.Seq != 0 {
			t.Errorf("send %d: %+v %v, want %v (%q)", i, p.res, p.err, want, text)
		}
	}
	sent(0, g.ID, 2, false)
	sent(1, g.ID, 3, false)
	sent(2, g.ID, 2, true)
	failed(3, ErrConflict, "")
	failed(4, ErrConflict, "")
	sent(5, g.ID, old.Seq, true)
	if !batch[5].res.At.Equal(old.At) {
		t.Errorf("retry of the earlier send: at %v, want %v", batch[5].res.At, old.At)
	}
	failed(6, ErrNotFound, "")
	failed(7, ErrNotFound, "")
	failed(8, ErrInvalid, fmt.Sprint(f.ids[3]))
	sent(9, d.ID, 1, false)
	sent(10, d.ID, 2, false)
	failed(11, ErrNotFound, "")
	if !batch[0].res.At.Equal(batch[9].res.At) || !batch[0].res.At.After(old.At) {
		t.Errorf("one batch, one time: %v and %v (earlier send %v)", batch[0].res.At, batch[9].res.At, old.At)
	}

	ms, _, err := f.svc.History(ctx, f.actor(2), g.ID, 0, 0, 50)
	if err != nil || len(ms) != 3 {
		t.Fatalf("group history: %d messages, %v", len(ms), err)
	}
	if ms[1].Text != "one" || ms[1].Sender != f.ids[0] || !slices.Equal(ms[1].Mentions, []int64{f.ids[2], f.ids[1]}) ||
		ms[2].Text != "two" || ms[2].Sender != f.ids[1] {
		t.Errorf("group history: %+v", ms)
	}
	dm, _, _ := f.svc.History(ctx, f.actor(1), d.ID, 0, 0, 50)
	if len(dm) != 2 || dm[0].Kind != "image" || !strings.Contains(string(dm[0].Payload), `"url"`) || dm[1].Text != "back" {
		t.Errorf("direct history: %+v", dm)
	}
	members, _, _ := f.svc.Members(ctx, f.actor(0), g.ID, 0, 10)
	reads := map[int64]int64{}
	for _, m := range members {
		reads[m.Account] = m.ReadSeq
	}
	if reads[f.ids[0]] != 2 || reads[f.ids[1]] != 3 || reads[f.ids[2]] != 0 {
		t.Errorf("read cursors after sending: %v (want the senders' at their last sends)", reads)
	}
	if n := len(f.rec.ofType(event.TypeMessage)) - before; n != 4 {
		t.Errorf("%d message events for the batch, want 4 (one per stored message)", n)
	}
}

// TestSyncsAnsweredTogether runs syncs of several clients as one batch, as
// a reconnect storm does, and checks that each gets what it gets alone:
// its own conversations, messages and errors, whatever the others ask.
func TestSyncsAnsweredTogether(t *testing.T) {
	f := newFixture(t, 6)
	ctx := context.Background()
	g, err := f.svc.CreateGroup(ctx, f.actor(0), "all", []int64{f.ids[1], f.ids[2], f.ids[3], f.ids[4]})
	if err != nil {
		t.Fatal(err)
	}
	d01, _ := f.svc.Direct(ctx, f.actor(0), f.ids[1])
	d02, _ := f.svc.Direct(ctx, f.actor(0), f.ids[2])
	d13, _ := f.svc.Direct(ctx, f.actor(1), f.ids[3])
	for i := range 7 {
		f.send(t, i%2, d01.ID, fmt.Sprint("d01-", i))
		f.send(t, i%5, g.ID, fmt.Sprint("g-", i))
	}
	f.send(t, 2, d02.ID, "d02")
	for i := range 3 {
		f.send(t, 3, d13.ID, fmt.Sprint("d13-", i))
	}
	if _, err := f.svc.RemoveMember(ctx, f.actor(0), g.ID, f.ids[4]); err != nil {
		t.Fatal(err)
	}
	f.send(t, 0, g.ID, "after-4-left")
	first, err := f.svc.Sync(ctx, f.actor(2), SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	f.send(t, 0, d02.ID, "since-the-cursor")

	reqs := []struct {
		who int
		r   SyncRequest
	}{
		{0, SyncRequest{Limit: 5}},                          // a new device: everything, in pages
		{1, SyncRequest{Convs: map[int64]int64{d01.ID: 3}}}, // behind in one
		{1, SyncRequest{Convs: map[int64]int64{d01.ID: 3}}}, // the same range again
		{0, SyncRequest{Convs: map[int64]int64{d01.ID: 2, g.ID: 0}, Limit: 2}},
		{2, SyncRequest{Convs: map[int64]int64{g.ID: 8, d02.ID: 1}, Cursor: first.Cursor}},
		{3, SyncRequest{Convs: map[int64]int64{d13.ID: 99}}},      // from the future
		{4, SyncRequest{Convs: map[int64]int64{d01.ID: 0}}},       // not its conversation
		{4, SyncRequest{Convs: map[int64]int64{g.ID: 0}}},         // removed: up to its removal
		{5, SyncRequest{Cursor: cursor{since: 1 << 40}.String()}}, // cursor from the future
		{3, SyncRequest{Convs: map[int64]int64{d13.ID: 1, g.ID: 8}, Limit: 1}},
	}
	type answer struct {
		res SyncResult
		err string
	}
	norm := func(res SyncResult, err error) answer {
		if err != nil {
			return answer{err: err.Error()}
		}
		if res.Cursor == "" {
			t.Error("a sync without a cursor")
		}
		res.Cursor = "" // the snapshot moves with other tests' transactions
		return answer{res: res}
	}
	var alone []answer
	for _, q := range reqs {
		alone = append(alone, norm(f.svc.Sync(ctx, f.actor(q.who), q.r)))
	}
	if alone[0].err != "" || len(alone[0].res.Messages) != 5+5+2 || !alone[0].res.More {
		t.Fatalf("a new device's sync: %+v", alone[0])
	}
	if alone[5].err == "" || alone[6].err == "" || alone[8].err == "" {
		t.Fatalf("bad syncs did not fail: %q %q %q", alone[5].err, alone[6].err, alone[8].err)
	}
	if m := alone[7].res.Messages; len(m) != 7 || m[len(m)-1].Text != "g-6" {
		t.Fatalf("a removed member's sync: %+v", alone[7])
	}

	// Together, as one batch.
	var jobs []*syncJob
	for _, q := range reqs {
		j, err := newSyncJob(f.actor(q.who), q.r)
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j)
	}
	answered, err := f.svc.syncBatch(ctx, jobs)
	if err != nil || len(answered) != len(jobs) {
		t.Fatalf("%d of %d syncs answered: %v", len(answered), len(jobs), err)
	}
	for i, j := range jobs {
		if got := norm(j.res, j.err); !reflect.DeepEqual(got, alone[i]) {
			t.Errorf("sync %d in a batch:\n got %+v\nwant %+v", i, got, alone[i])
		}
	}

	// And through Sync, all at once.
	got := make([]answer, len(reqs))
	var wg sync.WaitGroup
	for i, q := range reqs {
		wg.Go(func() { got[i] = norm(f.svc.Sync(ctx, f.actor(q.who), q.r)) })
	}
	wg.Wait()
	for i := range reqs {
		if !reflect.DeepEqual(got[i], alone[i]) {
			t.Errorf("sync %d at once:\n got %+v\nwant %+v", i, got[i], alone[i])
		}
	}
}

// TestSyncPage checks the page of a long absence: at most limit messages
// per conversation and maxSyncMessages in all, whole conversations only
// (a later, smaller one still fits), and only those conversations read.
func TestSyncPage(t *testing.T) {
	f := newFixture(t, 7)
	ctx := context.Background()
	sizes := []int{450, 450, 450, 450, 300, 100, 600} // 1,800, then 300 does not fit, 100 does
	var convs []int64
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for i, n := range sizes {
		c, err := f.svc.Direct(ctx, f.actor(0), f.ids[1+i%6])
		if i == 6 {
			c, err = f.svc.CreateGroup(ctx, f.actor(1), "big", []int64{f.ids[0]})
		}
		if err != nil {
			t.Fatal(err)
		}
		convs = append(convs, c.ID)
		for k := range n {
			wg.Go(func() {
				if _, err := f.svc.Send(ctx, f.actor(1+i%6), SendRequest{Conv: c.ID, ClientID: fmt.Sprint("p", i, "-", k), Text: "x"}); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	have := map[int64]int64{}
	for _, id := range convs {
		have[id] = 0
	}
	// The seventh conversation (600 behind, limit 500) comes first once
	// the others are read; with limit 500 it would take 500 of the page.
	j, err := newSyncJob(f.actor(0), SyncRequest{Convs: have, Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.syncBatch(ctx, []*syncJob{j}); err != nil || j.err != nil {
		t.Fatal(err, j.err)
	}
	res := j.res
	got := map[int64]int{}
	for _, m := range res.Messages {
		got[m.Conv]++
	}
	want := map[int64]int{convs[0]: 450, convs[1]: 450, convs[2]: 450, convs[3]: 450, convs[5]: 100}
	if !reflect.DeepEqual(got, want) || !res.More || len(res.Messages) != 1900 {
		t.Fatalf("first page: %v messages per conversation (%d), more %v; want %v", got, len(res.Messages), res.More, want)
	}
	if len(j.want) != 5 {
		t.Errorf("read %d conversations for a page of 5", len(j.want))
	}
	for id, n := range got {
		have[id] = int64(n)
	}
	res, err = f.svc.Sync(ctx, f.actor(0), SyncRequest{Convs: have, Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	got = map[int64]int{}
	for _, m := range res.Messages {
		got[m.Conv]++
	}
	if want := map[int64]int{convs[4]: 300, convs[6]: 500}; !reflect.DeepEqual(got, want) || !res.More || res.Upto[convs[6]] != 500 {
		t.Fatalf("second page: %v, more %v, upto %v; want %v", got, res.More, res.Upto, want)
	}
}

// One committer unless told otherwise: on a small database a batch's
// fixed cost is most of what a small batch costs (Options.Committers).
func TestOneCommitterByDefault(t *testing.T) {
	if n := len(newFixture(t, 0).svc.shards); n != 1 {
		t.Fatalf("%d committers by default, want 1", n)
	}
	if n := len(newFixtureWith(t, Options{Committers: 3}, 0).svc.shards); n != 3 {
		t.Fatalf("%d committers, want 3", n)
	}
}
