package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's counters, served at /metrics.
type metrics struct {
	open            prometheus.Gauge
	subscribed      prometheus.Gauge
	busGaps         prometheus.Counter
	events          prometheus.Counter
	localEvents     prometheus.Counter
	deliveries      prometheus.Counter
	frames          prometheus.Counter
	writes          prometheus.Counter
	sends           prometheus.Counter
	sendSeconds     prometheus.Histogram
	acks            prometheus.Counter
	slow            prometheus.Counter
	refused         prometheus.Counter
	invalid         prometheus.Counter
	refusedUpgrades prometheus.Counter
	pongsFailed     prometheus.Counter
	waitingUpgrades prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{Name: "zhangban_gateway_connections", Help: "Open WebSocket connections."}),
		subscribed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "zhangban_gateway_events_subscribed",
			Help: "1 while the node is subscribed to the bus's events: while it has connections, and a minute after the last one."}),
		busGaps: prometheus.NewCounter(prometheus.CounterOpts{Name: "zhangban_gateway_bus_gaps_total",
			Help: "Times events may have been lost on their way to this node (the bus reconnected, or the subscription dropped events); each sends every connection a resync event."}),
		events: prometheus.NewCounter(prometheus.CounterOpts{Name: "zhangban_gateway_events_total", Help: "Events received from the bus."}),
		localEvents: prometheus.NewCounter(prometheus.CounterOpts{Name: "zhangban_gateway_local_events_total",
			Help: "Events this node published and routed in process: the bus does not send a node its own events back."}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{Name: "zhangban_gateway_deliveries_total", Help: "Event frames queued for local connections."}),
		frames:     prometheus.NewCounter(prometheus.CounterOpts{Name: "zhangban_gateway_frames_written_total", Help: "Frames written to sockets."}),
		writes:     prometheus.NewCounter(prometheus.CounterOpts{Name: "zhangban_gateway_writes_total", Help: "WebSocket messages written to sockets; frames_written / writes is how many frames a write carries."}),
		sends:      prometheus.NewCounter(prometheus.CounterOpts{Name: "zhangban_gateway_sends_total", Help: "Messages sent over WebSockets."}),
		sendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "zhangban_gateway_send_seconds",
			Help:    "Time from a send frame's arrival to its commit (queueing for a committer included).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		acks:    prometheus.NewCounter(prometheus.CounterOpts{Name: "zhangban_gateway_acks_total", Help: "Ack frames received."}),
		slow:    prometheus.NewCounter(prometheus.CounterOpts{Name: "zhangban_gateway_slow_consumers_total", Help: "Connections cut as slow consumers."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "zhangban_gateway_rate_limited_total", Help: "Frames refused by the rate limit."}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{Name: "zhangban_gateway_invalid_frames_total", Help: "Frames that could not be decoded."}),
		pongsFailed: prometheus.NewCounter(prometheus.CounterOpts{Name: "zhangban_gateway_pongs_failed_total",
			Help: "Pongs to a client's ping not written within 1 s (the writer held the connection, or it failed); a client drops a connection whose pings go unanswered."}),
		refusedUpgrades: prometheus.NewCounter(prometheus.CounterOpts{Name: "zhangban_gateway_refused_upgrades_total", Help: "Upgrades refused with 503 because too many connections were being set up."}),
		waitingUpgrades: prometheus.NewGauge(prometheus.GaugeOpts{Name: "zhangban_gateway_upgrades_waiting", Help: "Upgrades waiting for a set-up slot."}),
	}
	if reg != nil {
		reg.MustRegister(m.open, m.subscribed, m.busGaps, m.events, m.localEvents, m.deliveries, m.frames, m.writes, m.sends, m.sendSeconds, m.acks, m.slow, m.refused, m.invalid, m.refusedUpgrades, m.pongsFailed, m.waitingUpgrades)
	}
	return m
}
