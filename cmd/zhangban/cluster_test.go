package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zhangban/zhangban/gateway/client"
	"github.com/zhangban/zhangban/internal/testenv"
)

// cluster is three zhangban processes on one PostgreSQL and one external
// nats-server, each a separate OS process.
type cluster struct {
	t     *testing.T
	nodes []*proc
	alive []atomic.Bool // which nodes the balancer may send clients to
	admin string
}

// startNATS builds and runs a nats-server process on a free port.
func startNATS(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nats-server")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		t.Fatalf("building nats-server: %v\n%s", err, out)
	}
	addr := freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "-a", host, "-p", port)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testenv.Eventually(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	return "nats://" + addr
}

func newCluster(t *testing.T, n int) *cluster {
	natsURL := startNATS(t)
	key := make([]byte, 32)
	rand.Read(key)
	common := []string{"DATABASE_URL=" + testenv.URL(t), "NATS_URL=" + natsURL,
		"ZHANGBAN_JWT_KEY=" + base64.StdEncoding.EncodeToString(key),
		"ZHANGBAN_BOOTSTRAP_ADMIN=admin:admin-password-1", "ZHANGBAN_ACCESS_TTL=1h", "ZHANGBAN_SHUTDOWN_TIMEOUT=5s"}
	c := &cluster{t: t, alive: make([]atomic.Bool, n)}
	for i := range n {
		// One after the other: the first creates the schema and the admin.
		p := start(t, append(common, "ZHANGBAN_ADDR="+freeAddr(t), fmt.Sprintf("ZHANGBAN_NODE=node%d", i)))
		p.waitReady(60 * time.Second)
		c.nodes = append(c.nodes, p)
		c.alive[i].Store(true)
	}
	c.admin = login(t, c.nodes[0].addr, "admin", "admin-password-1")
	return c
}

// api calls node 0's HTTP API and decodes the answer.
func (c *cluster) api(method, path, token string, body, out any) {
	c.t.Helper()
	status, resp := call(c.t, method, "http://"+c.nodes[0].addr+path, token, body)
	if status >= 300 {
		c.t.Fatalf("%s %s: %d %s", method, path, status, resp)
	}
	if out != nil {
		if err := json.Unmarshal(resp, out); err != nil {
			c.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// people creates n accounts who can see each other (one unit) and returns
// their ids and access tokens.
func (c *cluster) people(n int) ([]int64, []string) {
	var unit struct{ ID int64 }
	c.api("POST", "/v1/org/units", c.admin, map[string]any{"name": "集群测试省", "level": "province"}, &unit)
	var ids []int64
	var tokens []string
	for i := range n {
		name := fmt.Sprintf("p%d", i)
		var acc struct{ ID int64 }
		c.api("POST", "/v1/accounts", c.admin, map[string]any{"login": name, "display_name": name, "password": "password-" + name}, &acc)
		c.api("POST", fmt.Sprintf("/v1/org/units/%d/members", unit.ID), c.admin, map[string]any{"account_id": acc.ID, "title": "科员"}, nil)
		ids = append(ids, acc.ID)
		tokens = append(tokens, login(c.t, c.nodes[0].addr, name, "password-"+name))
	}
	return ids, tokens
}

// dialer is the test's load balancer: a client asks for "node<i>" and is
// sent to that node while it lives, else to the next live one.
func (c *cluster) httpClient() *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var first int
		fmt.Sscanf(strings.TrimSuffix(addr, ":80"), "node%d", &first)
		for k := range len(c.nodes) {
			i := (first + k) % len(c.nodes)
			if c.alive[i].Load() {
				return d.DialContext(ctx, network, c.nodes[i].addr)
			}
		}
		return nil, fmt.Errorf("no live node")
	}}}
}

// device is a connected client and what it received.
type device struct {
	*client.Client
	mu       sync.Mutex
	got      map[int64][]int64 // conversation → sequences received, in order
	presence []client.Presence
	synced   atomic.Int32
	cancel   context.CancelFunc
	done     chan error
}

func (c *cluster) connect(node int, token string) *device {
	d := &device{got: map[int64][]int64{}, done: make(chan error, 1)}
	d.Client = client.New(client.Config{
		URL:        fmt.Sprintf("ws://node%d/v1/ws", node),
		Token:      func(context.Context) (string, error) { return token, nil },
		HTTPClient: c.httpClient(),
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond,
		AutoAck:    true,
		OnMessage: func(m client.Message) {
			d.mu.Lock()
			d.got[m.Conv] = append(d.got[m.Conv], m.Seq)
			d.mu.Unlock()
		},
		OnEvent: func(e client.Event) {
			if e.Type == client.EventPresence {
				var p client.Presence
				json.Unmarshal(e.Data, &p)
				d.mu.Lock()
				d.presence = append(d.presence, p)
				d.mu.Unlock()
			}
		},
		OnState: func(s client.State, err error) {
			if s == client.StateSynced {
				d.synced.Add(1)
			}
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- d.Run(ctx) }()
	c.t.Cleanup(func() { cancel(); <-d.done })
	testenv.Eventually(c.t, 10*time.Second, func() error {
		if d.synced.Load() == 0 {
			return fmt.Errorf("device on node %d not synced", node)
		}
		return nil
	})
	return d
}

func (d *device) seqs(conv int64) []int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int64(nil), d.got[conv]...)
}

func (d *device) sawPresence(account int64, online bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.presence {
		if p.Account == account && p.Online == online {
			return true
		}
	}
	return false
}

// TestThreeNodes runs three nodes as separate processes: messages and
// presence cross nodes, and SIGKILL of a node under traffic loses and
// doubles no acknowledged message; its clients resume on the others.
func TestThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers and a nats-server")
	}
	t.Parallel()
	c := newCluster(t, 3)
	ids, tokens := c.people(5)
	var group struct{ ID int64 }
	c.api("POST", "/v1/conversations", tokens[0], map[string]any{"title": "跨节点", "members": ids[1:]}, &group)

	sender := c.connect(0, tokens[0])  // node 0
	onTwo := c.connect(1, tokens[1])   // node 1
	onThree := c.connect(2, tokens[2]) // node 2, killed below
	sender3 := c.connect(2, tokens[3]) // sends from node 2
	watched := c.connect(2, tokens[4]) // a user only on node 2
	_ = watched

	// Cross-node delivery.
	ctx := context.Background()
	if _, err := sender.Send(ctx, client.Send{Conv: group.ID, Text: "各节点好"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		for _, d := range []*device{onTwo, onThree, sender3} {
			if s := d.seqs(group.ID); len(s) != 1 || s[0] != 1 {
				return fmt.Errorf("received %v", s)
			}
		}
		return nil
	})

	// Cross-node presence: the user on node 2 is online for a watcher on node 1.
	// (Presence is written in batches every 200 ms.)
	testenv.Eventually(t, 5*time.Second, func() error {
		st, err := onTwo.Presence(ctx, []int64{ids[4]}, true)
		if err != nil || len(st) != 1 || !st[0].Online {
			return fmt.Errorf("presence across nodes: %+v %v", st, err)
		}
		return nil
	})

	// Traffic from node 0 and node 2; node 2 is killed in the middle.
	var acked sync.Map // seq → client id, for every acknowledged send
	var sendErrs atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range []*device{sender, sender3} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				r, err := s.Send(sctx, client.Send{Conv: group.ID, Text: fmt.Sprint("m", i)})
				cancel()
				if err != nil {
					sendErrs.Add(1)
					continue
				}
				if prev, dup := acked.LoadOrStore(r.Seq, r.ClientID); dup && prev != r.ClientID {
					t.Errorf("seq %d acknowledged for two sends", r.Seq)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(time.Second)
	c.alive[2].Store(false)
	c.nodes[2].cmd.Process.Signal(syscall.SIGKILL)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	// Every device, including those that were on the killed node, ends up
	// with every message exactly once and in order.
	var last int64
	acked.Range(func(k, _ any) bool { last = max(last, k.(int64)); return true })
	t.Logf("%d messages acknowledged across the kill (%d sends failed and were not acknowledged)", last, sendErrs.Load())
	if last < 20 {
		t.Fatalf("only %d messages acknowledged (%d send errors)", last, sendErrs.Load())
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		for name, d := range map[string]*device{"sender": sender, "node1": onTwo, "killed node": onThree, "sender on killed node": sender3} {
			s := d.seqs(group.ID)
			if int64(len(s)) < last {
				return fmt.Errorf("%s has %d of %d messages", name, len(s), last)
			}
		}
		return nil
	})
	for name, d := range map[string]*device{"sender": sender, "node1": onTwo, "killed node": onThree, "sender on killed node": sender3} {
		for i, seq := range d.seqs(group.ID) {
			if seq != int64(i+1) {
				t.Fatalf("%s: message %d has seq %d (lost or doubled)", name, i, seq)
			}
		}
	}
	// Nothing was stored twice: every stored message has its own client id.
	var stored, distinct int
	status, body := call(t, "GET", fmt.Sprintf("http://%s/v1/conversations/%d/messages?after=0&limit=200", c.nodes[0].addr, group.ID), tokens[1], nil)
	if status != 200 {
		t.Fatalf("history: %d %s", status, body)
	}
	var page struct {
		Messages []struct {
			Seq      int64  `json:"seq"`
			Sender   int64  `json:"sender"`
			ClientID string `json:"client_id"`
		} `json:"messages"`
	}
	json.Unmarshal(body, &page)
	seen := map[string]bool{}
	for _, m := range page.Messages {
		stored++
		k := fmt.Sprint(m.Sender, "/", m.ClientID)
		if !seen[k] {
			distinct++
		}
		seen[k] = true
	}
	if stored != distinct {
		t.Errorf("%d messages stored for %d sends", stored, distinct)
	}

	// The user whose only device was on the killed node reconnected too, so
	// it is online again; presence of a node that died is corrected by
	// expiry (see TestPresenceExpiresWithDeadNode in the gateway package).
	testenv.Eventually(t, 30*time.Second, func() error {
		st, err := onTwo.Presence(ctx, []int64{ids[4]}, false)
		if err != nil || len(st) != 1 || !st[0].Online {
			return fmt.Errorf("presence after failover: %+v %v", st, err)
		}
		return nil
	})
}
