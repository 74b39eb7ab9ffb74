package server

import "github.com/prometheus/client_golang/prometheus"

type serverMetrics struct {
	leader           prometheus.Gauge
	reconcileSeconds prometheus.Histogram
	placements       *prometheus.CounterVec
	forwarded        prometheus.Counter
	nodesUp          prometheus.Gauge
}

func newServerMetrics(reg prometheus.Registerer) *serverMetrics {
	m := &serverMetrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "accelpool_server_leader",
			Help: "1 while this replica leads the control plane."}),
		reconcileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "accelpool_server_reconcile_seconds",
			Help: "Duration of reconcile passes.", Buckets: prometheus.ExponentialBuckets(1e-4, 2, 16)}),
		placements: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "accelpool_server_placements_total",
			Help: "Instances placed, removed and placements that found no node, by outcome."}, []string{"outcome"}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{Name: "accelpool_server_forwarded_writes_total",
			Help: "Writes this replica forwarded to the leader."}),
		nodesUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "accelpool_server_nodes_up",
			Help: "Nodes whose lease is alive."}),
	}
	if reg != nil {
		reg.MustRegister(m.leader, m.reconcileSeconds, m.placements, m.forwarded, m.nodesUp)
	}
	return m
}
