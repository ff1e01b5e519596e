package metrics_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// A service exports its muxes' counters on /metrics.
func ExampleCollector() {
	m := kcm.NewMux(kcm.Config{})
	defer m.Close()
	m.NewSocket(kcm.Datagram)

	col := metrics.NewCollector()
	col.Add("backend", m)
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux) // in a service: http.ListenAndServe(":9100", mux)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "kcm_sockets") || strings.HasPrefix(line, "kcm_psocks") {
			fmt.Println(line)
		}
	}
	// Output:
	// kcm_psocks{mux="backend"} 0
	// kcm_sockets{mux="backend"} 1
}
