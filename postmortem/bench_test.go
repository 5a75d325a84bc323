package postmortem

import (
	"io"
	"testing"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
)

// BenchmarkClassify: one verdict from a minute of worker and cgroup samples.
func BenchmarkClassify(b *testing.B) {
	r := pressureReport()
	s := gunicorn.Defaults()
	s.Timeout = 30
	e := Evidence{Incident: r.Incident, Settings: s, Timeline: silence(61, 30, "S", 500<<20), Container: cgroup(61, 900<<20, 1000<<20, 0, 0)}
	th := DefaultThresholds()
	b.ReportAllocs()
	for b.Loop() {
		Classify(e, th)
	}
}

// BenchmarkWriteHTML: rendering one report's page with its three charts.
func BenchmarkWriteHTML(b *testing.B) {
	r := pressureReport()
	b.ReportAllocs()
	for b.Loop() {
		if err := WriteHTML(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStoreWrite: one report written (JSON + HTML, each fsynced) with retention applied
// over a directory of 100 reports.
func BenchmarkStoreWrite(b *testing.B) {
	s := NewStore(b.TempDir(), Retention{MaxCount: 100})
	r := pressureReport()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.ID = r.Incident.At.Add(time.Duration(i)*time.Millisecond).UTC().Format("20060102T150405.000Z") + "-1"
		if _, err := s.Write(r); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
