package db

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// PoolCollector exports pgxpool statistics to Prometheus.
type PoolCollector struct {
	pool  *pgxpool.Pool
	descs map[string]*prometheus.Desc
}

// NewPoolCollector returns a collector for pool; register it once.
func NewPoolCollector(pool *pgxpool.Pool) *PoolCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("zhangban_db_pool_"+name, help, nil, nil)
	}
	return &PoolCollector{pool: pool, descs: map[string]*prometheus.Desc{
		"acquired":        d("acquired_conns", "Connections in use."),
		"idle":            d("idle_conns", "Idle connections."),
		"total":           d("total_conns", "Open connections."),
		"max":             d("max_conns", "Configured pool size."),
		"acquires":        d("acquires_total", "Successful acquisitions."),
		"empty_acquires":  d("empty_acquires_total", "Acquisitions that had to wait for a connection."),
		"cancel_acquires": d("canceled_acquires_total", "Acquisitions cancelled by their context."),
		"acquire_seconds": d("acquire_seconds_total", "Time spent acquiring connections."),
	}}
}

// Describe implements prometheus.Collector.
func (c *PoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *PoolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	g := func(k string, v float64) { ch <- prometheus.MustNewConstMetric(c.descs[k], prometheus.GaugeValue, v) }
	n := func(k string, v float64) { ch <- prometheus.MustNewConstMetric(c.descs[k], prometheus.CounterValue, v) }
	g("acquired", float64(s.AcquiredConns()))
	g("idle", float64(s.IdleConns()))
	g("total", float64(s.TotalConns()))
	g("max", float64(s.MaxConns()))
	n("acquires", float64(s.AcquireCount()))
	n("empty_acquires", float64(s.EmptyAcquireCount()))
	n("cancel_acquires", float64(s.CanceledAcquireCount()))
	n("acquire_seconds", s.AcquireDuration().Seconds())
}
