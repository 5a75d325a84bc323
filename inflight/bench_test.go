package inflight

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// benchFile writes a worker's request file with slots slots, each serving a request, to a tmpfs
// directory as the hook keeps it (/dev/shm when there is one).
func benchFile(b *testing.B, slots int) string {
	b.Helper()
	f := newFile(slots, ModelThread, QueryNames, "gthread")
	for i := range slots {
		f.slot(i, req{state: stateInFlight, method: "GET", addr: "10.0.0.7", path: "/api/report/" + strconv.Itoa(i), q: "year=…",
			start: time.Duration(i+1) * time.Second, thread: 0x7f00 + uint64(i), served: 100, last: 20 * time.Millisecond})
	}
	dir := b.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "inflight-bench-"); err == nil {
			dir = d
			b.Cleanup(func() { os.RemoveAll(d) })
		}
	}
	p := filepath.Join(dir, "4242.req")
	if err := os.WriteFile(p, f.b, 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkReadFile is what gwrap does per worker to read its requests: for the flight record
// at every sweep (once a second), for /status, the gauges and each verdict. A sync worker has one
// slot; a gthread worker one per thread.
func BenchmarkReadFile(b *testing.B) {
	for _, slots := range []int{1, 4, 32} {
		b.Run(strconv.Itoa(slots)+"slots", func(b *testing.B) {
			p := benchFile(b, slots)
			b.ReportAllocs()
			for b.Loop() {
				t, err := ReadFile(p, QueryNames)
				if err != nil || len(t.InFlight) != slots {
					b.Fatalf("%d in flight, %v", len(t.InFlight), err)
				}
			}
		})
	}
}

// BenchmarkParse is the parse alone, from memory.
func BenchmarkParse(b *testing.B) {
	f := newFile(4, ModelThread, QueryNames, "gthread")
	for i := range 4 {
		f.slot(i, req{state: stateInFlight, method: "GET", addr: "10.0.0.7", path: "/api/report", q: "year=…", start: time.Second, served: 1})
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(f.b, QueryNames); err != nil {
			b.Fatal(err)
		}
	}
}
