package gateway

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// unknownApp is the app label of requests for applications the Resolver
// does not know, so that clients cannot grow the label set at will.
const unknownApp = "_unknown"

type metrics struct {
	requests    *prometheus.CounterVec
	retries     *prometheus.CounterVec
	outstanding *prometheus.GaugeVec

	apps sync.Map // app label in use -> struct{}, for Prune
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accelpool_gateway_requests_total",
			Help: "Inference requests through the gateway by application and outcome.",
		}, []string{"app", "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accelpool_gateway_retries_total",
			Help: "Attempts beyond the first, each on another instance, by application.",
		}, []string{"app"}),
		outstanding: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "accelpool_gateway_outstanding",
			Help: "Inference requests in flight through the gateway by application.",
		}, []string{"app"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.retries, m.outstanding)
	}
	return m
}

// use records that label app has series.
func (m *metrics) use(app string) {
	if _, ok := m.apps.Load(app); !ok {
		m.apps.Store(app, struct{}{})
	}
}

// forget deletes the series of the labelled applications not in keep and
// returns them.
func (m *metrics) forget(keep map[string]bool) []string {
	var gone []string
	m.apps.Range(func(k, _ any) bool {
		if app := k.(string); app != unknownApp && !keep[app] {
			m.apps.Delete(app)
			gone = append(gone, app)
		}
		return true
	})
	for _, app := range gone {
		l := prometheus.Labels{"app": app}
		m.requests.DeletePartialMatch(l)
		m.retries.DeletePartialMatch(l)
		m.outstanding.DeletePartialMatch(l)
	}
	return gone
}
