package metrics_test

import (
	"net/http"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// A service exports its muxes' counters on /metrics.
func ExampleCollector() {
	m := kcm.NewMux(kcm.Config{})
	defer m.Close()

	col := metrics.NewCollector()
	col.Add("backend", m)
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// http.ListenAndServe(":9100", nil)
}
