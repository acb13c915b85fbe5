package gateway

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests  *prometheus.CounterVec
	duration  prometheus.Histogram
	retries   prometheus.Counter
	ejections prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gmesh_gateway_requests_total",
			Help: "Requests the gateway answered, by status code and backend (\"none\" when no backend was tried).",
		}, []string{"code", "backend"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gmesh_gateway_request_duration_seconds",
			Help:    "Time from receiving a request to finishing its response.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15},
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gmesh_gateway_retries_total",
			Help: "Requests retried on another backend after a connection failed before sending.",
		}),
		ejections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gmesh_gateway_ejections_total",
			Help: "Backends ejected by passive outlier detection.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.duration, m.retries, m.ejections} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("gateway: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
