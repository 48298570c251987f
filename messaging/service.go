package messaging

import (
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/db"
	"github.com/zhangban/zhangban/internal/event"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations are the messaging tables. They refer to accounts: migrate auth
// first.
func Migrations() db.Component {
	sub, _ := fs.Sub(migrations, "migrations")
	return db.Component{Name: "messaging", FS: sub}
}

// Limits of what one request may carry.
const (
	MaxGroupMembers = 2000
	MaxTextRunes    = 4000
	MaxPayloadBytes = 16 << 10
	MaxMentions     = 100
	MaxClientID     = 64
	MaxTitleRunes   = 100
	MaxHistory      = 200
	MaxSyncPerConv  = 500
	// maxSyncMessages caps one sync page over all conversations.
	maxSyncMessages = 2000
)

// Visibility answers which accounts an actor may see in the address book,
// and so may message or invite. org.Service implements it.
type Visibility interface {
	VisiblePeople(ctx context.Context, a authz.Actor, accounts []int64) (map[int64]bool, error)
}

// Message is one message as clients see it.
type Message struct {
	Conv     int64           `json:"conv"`
	Seq      int64           `json:"seq"`
	Sender   int64           `json:"sender"`
	ClientID string          `json:"client_id"`
	Kind     string          `json:"kind"`
	Text     string          `json:"text"`
	Mentions []int64         `json:"mentions"`
	Payload  json.RawMessage `json:"payload"`
	At       time.Time       `json:"at"`
}

// Conversation is a conversation; the fields after MemberCount are the
// viewer's own state and are empty in events shared by all members.
type Conversation struct {
	ID          int64      `json:"id"`
	Kind        string     `json:"kind"` // direct, group
	Title       string     `json:"title"`
	Peer        int64      `json:"peer,omitempty"`    // direct: the other member, from the viewer's side
	Members     []int64    `json:"members,omitempty"` // direct: both members
	CreatedBy   int64      `json:"created_by"`
	CreatedAt   time.Time  `json:"created_at"`
	LastSeq     int64      `json:"last_seq"`
	LastAt      *time.Time `json:"last_at"`
	MemberCount int        `json:"member_count"`

	Role      string `json:"role,omitempty"` // owner, admin, member; "" after leaving
	JoinedSeq int64  `json:"joined_seq"`
	LeftSeq   *int64 `json:"left_seq,omitempty"` // set once the viewer left or was removed
	ReadSeq   int64  `json:"read_seq"`
	Unread    int64  `json:"unread"`
}

// Member is one member of a conversation.
type Member struct {
	Account  int64     `json:"account"`
	Role     string    `json:"role"`
	ReadSeq  int64     `json:"read_seq"`
	JoinedAt time.Time `json:"joined_at"`
}

// Service is the messaging domain on behalf of actors.
type Service struct {
	pool *pgxpool.Pool
	vis  Visibility
	pub  event.Publisher
	log  *slog.Logger

	shards []chan *pending // send queues, one per committer; a conversation always maps to the same one
	mu     sync.RWMutex    // guards closed against sends racing Close
	closed bool
	wg     sync.WaitGroup // the committers

	// memberships answers ConversationIDs, many accounts in one query
	// when many connect at once.
	memberships *db.Coalescer[int64, []int64]
	// syncs answers many syncs with one set of queries (syncBatch).
	syncs *db.Coalescer[*syncJob, struct{}]
}

// Options tune the committers.
type Options struct {
	// Committers is how many send transactions run at once (default 1).
	// Fewer committers take bigger batches, and a batch's fixed cost in
	// PostgreSQL (about 1 ms: the call, its statements, the commit's
	// flush) is most of what a small one costs: on 2 cores, 2 instead of
	// 4 gave direct messages at 2,000/s a p99 of 212-270 ms instead of
	// 359-530 ms, and 1 instead of 2 a median round of 7.3 ms instead of
	// 10.0 ms over six alternated runs each, with the same throughput at
	// 11,000/s offered (docs/benchmarks.md, session 17). One committer
	// stores up to MaxBatch sends a round trip; a database with cores to
	// spare may take more (--send-committers).
	Committers int
	QueueSize  int // sends waiting per committer before callers block (default 1024)
	MaxBatch   int // sends per transaction (default 256)
	// CommitGap is the least time from the start of one of a committer's
	// transactions to the start of its next (0: none). Sends that arrive
	// meanwhile wait and join the next batch; a send that finds the
	// committer idle for longer goes at once, and under a load whose
	// commits take longer than the gap no send waits for it. Between the
	// two, it trades a few milliseconds of a send's latency for fewer,
	// larger batches, whose fixed cost is most of what PostgreSQL spends
	// on a small one (--send-commit-gap).
	CommitGap time.Duration
}

// New returns a Service and starts its committers; Close stops them.
func New(pool *pgxpool.Pool, vis Visibility, pub event.Publisher, log *slog.Logger, o Options) *Service {
	if o.Committers <= 0 {
		o.Committers = 1
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 1024
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 256
	}
	if pub == nil {
		pub = event.Discard{}
	}
	s := &Service{pool: pool, vis: vis, pub: pub, log: log}
	log.Info("sends are stored by committers", "committers", o.Committers, "max_batch", o.MaxBatch, "queue", o.QueueSize, "commit_gap", o.CommitGap.String())
	s.memberships = &db.Coalescer[int64, []int64]{Load: s.loadMemberships}
	s.syncs = &db.Coalescer[*syncJob, struct{}]{Load: s.syncBatch, MaxKeys: syncsPerBatch}
	for range o.Committers {
		q := make(chan *pending, o.QueueSize)
		s.shards = append(s.shards, q)
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.commitLoop(q, o.MaxBatch, o.CommitGap) }()
	}
	return s
}

// Close refuses new sends, lets the committers finish what is queued and
// waits for them (or for ctx). It is idempotent.
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		for _, q := range s.shards {
			close(q)
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// publish sends an event after its transaction committed. The request may
// have been cancelled meanwhile; the event must still go out.
func (s *Service) publish(ctx context.Context, e event.Event) {
	s.pub.Publish(context.WithoutCancel(ctx), e)
}

// page trims a result fetched with limit+1 rows to limit and reports
// whether there was more.
func page[T any](xs []T, limit int) ([]T, bool) {
	if len(xs) > limit {
		return xs[:limit], true
	}
	return xs, false
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own types are marshalled here
	}
	return b
}
