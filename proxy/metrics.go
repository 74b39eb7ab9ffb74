package proxy

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/accelpool/accelpool/offload"
)

// unknownModel is the model label of requests for models no option
// serves, so clients cannot grow the label set at will.
const unknownModel = "_unknown"

type metrics struct {
	requests  *prometheus.CounterVec
	fallbacks *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	predicted *prometheus.HistogramVec
	relErr    *prometheus.HistogramVec
	rtt       *prometheus.GaugeVec
	bandwidth *prometheus.GaugeVec
	linkUp    *prometheus.GaugeVec

	mu     sync.Mutex
	models map[string]bool
}

var latencyBuckets = prometheus.ExponentialBuckets(0.0005, 2, 16) // 0.5 ms .. 16 s

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accelpool_proxy_attempts_total",
			Help: "Attempts to run a request, by model, option (local or target) and outcome.",
		}, []string{"model", "option", "outcome"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accelpool_proxy_fallbacks_total",
			Help: "Requests moved on to the next option after a failed attempt, by model, the option that failed and why.",
		}, []string{"model", "from", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "accelpool_proxy_latency_seconds",
			Help:    "Measured latency of answered requests through the proxy, by model and the option that answered.",
			Buckets: latencyBuckets,
		}, []string{"model", "option"}),
		predicted: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "accelpool_proxy_predicted_seconds",
			Help:    "Predicted latency of the option that answered at its first attempt, by model and option.",
			Buckets: latencyBuckets,
		}, []string{"model", "option"}),
		relErr: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "accelpool_proxy_prediction_error_ratio",
			Help:    "|predicted - measured| / measured for requests answered at their first attempt with a prediction.",
			Buckets: []float64{0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2},
		}, []string{"model", "option"}),
		rtt: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "accelpool_proxy_link_rtt_seconds",
			Help: "Round-trip time to each target, as last estimated.",
		}, []string{"target"}),
		bandwidth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "accelpool_proxy_link_bandwidth_bits_per_second",
			Help: "Bandwidth to each target by direction (up, down): the median of the last five probes; a link faster than a probe can time reads as about 419 Mbit/s (at least).",
		}, []string{"target", "direction"}),
		linkUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "accelpool_proxy_link_up",
			Help: "1 when the last probe of the target's link answered.",
		}, []string{"target"}),
		models: map[string]bool{},
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.fallbacks, m.latency, m.predicted, m.relErr, m.rtt, m.bandwidth, m.linkUp)
	}
	return m
}

// model marks name as a served model label (only models some option
// served get their own label; see request).
func (m *metrics) model(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.models[name] = true
	return name
}

func (m *metrics) request(model, option, outcome string) {
	m.requests.WithLabelValues(m.model(model), option, outcome).Inc()
}

func (m *metrics) observe(model string, opt offload.Predicted, took time.Duration, first bool) {
	model = m.model(model)
	m.latency.WithLabelValues(model, opt.Name).Observe(took.Seconds())
	if !first || opt.Explore || took <= 0 {
		return
	}
	m.predicted.WithLabelValues(model, opt.Name).Observe(opt.Latency.Seconds())
	diff := opt.Latency - took
	if diff < 0 {
		diff = -diff
	}
	m.relErr.WithLabelValues(model, opt.Name).Observe(float64(diff) / float64(took))
}

func (m *metrics) link(target string, l link) {
	up := 0.0
	if !l.failed {
		up = 1
	}
	m.linkUp.WithLabelValues(target).Set(up)
	if l.rtt.N() > 0 {
		m.rtt.WithLabelValues(target).Set(l.rtt.Duration().Seconds())
	}
	if l.up.N() > 0 {
		m.bandwidth.WithLabelValues(target, "up").Set(l.up.Value())
	}
	if l.down.N() > 0 {
		m.bandwidth.WithLabelValues(target, "down").Set(l.down.Value())
	}
}
