package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the agent's Prometheus series, registered on an injected
// registry (never the global one).
type metrics struct {
	requests    *prometheus.CounterVec
	queueTime   *prometheus.HistogramVec
	computeTime *prometheus.HistogramVec
	batchSize   *prometheus.HistogramVec
	loaded      prometheus.Gauge
	queueLen    *prometheus.GaugeVec
	loadTime    *prometheus.HistogramVec
}

// latencyBuckets span 50 µs to ~26 s.
var latencyBuckets = prometheus.ExponentialBuckets(50e-6, 2, 20)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accelpool_inference_requests_total",
			Help: "Inference requests by model and outcome (success, invalid, not_found, unavailable, overloaded, deadline, canceled, error).",
		}, []string{"model", "outcome"}),
		queueTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "accelpool_inference_queue_seconds",
			Help:    "Time requests waited in the model's queue before execution.",
			Buckets: latencyBuckets,
		}, []string{"model"}),
		computeTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "accelpool_inference_compute_seconds",
			Help:    "Duration of each model execution (one per batch).",
			Buckets: latencyBuckets,
		}, []string{"model"}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "accelpool_inference_batch_size",
			Help:    "Rows per model execution.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}, []string{"model"}),
		loaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "accelpool_models_loaded",
			Help: "Models currently loaded and ready.",
		}),
		queueLen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "accelpool_inference_queue_length",
			Help: "Requests waiting in each model's queue.",
		}, []string{"model"}),
		loadTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "accelpool_model_load_seconds",
			Help:    "Time to load a model into the runtime.",
			Buckets: prometheus.ExponentialBuckets(1e-3, 2, 16),
		}, []string{"model"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.queueTime, m.computeTime, m.batchSize, m.loaded, m.queueLen, m.loadTime)
	}
	return m
}

func (m *metrics) batch(model string) func(rows, requests int, d time.Duration) {
	ct := m.computeTime.WithLabelValues(model)
	bs := m.batchSize.WithLabelValues(model)
	return func(rows, _ int, d time.Duration) {
		ct.Observe(d.Seconds())
		bs.Observe(float64(rows))
	}
}
