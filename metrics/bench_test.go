package metrics

import (
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// BenchmarkScrape is one /metrics response of a fed registry (without the Live hook, whose
// cost is probes.BenchmarkSaturation), through promhttp's handler.
func BenchmarkScrape(b *testing.B) {
	h := promhttp.HandlerFor(fed().Registry(), promhttp.HandlerOpts{})
	req := httptest.NewRequest("GET", "/metrics", nil)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}

// BenchmarkFeed is what the event loop pays per update: a counter and a snapshot setter.
func BenchmarkFeed(b *testing.B) {
	m := fed()
	c := Container{WorkingSetBytes: Known(1), LimitBytes: Known(2)}
	b.ReportAllocs()
	for b.Loop() {
		m.WorkerLate(0.5, RoleHTTP)
		m.SetContainer(c)
		m.SetWorkers(8, 0)
	}
}
