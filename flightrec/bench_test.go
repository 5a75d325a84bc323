package flightrec

import (
	"testing"
	"time"

	"github.com/gwrap/gwrap/probes"
)

// BenchmarkWorkerSample is the cost of recording one worker's hot sample (encode + write(2) to
// the page cache, rotation amortised).
func BenchmarkWorkerSample(b *testing.B) {
	c := &clock{t0}
	r := newRec(b, b.TempDir(), "web-1", c, 0)
	id := probes.ID{PID: 101, StartTime: 9}
	b.ReportAllocs()
	for b.Loop() {
		r.Worker(id, worker(c.add(time.Second), 60*MiB))
	}
}

// BenchmarkContainerSample is the cost of recording one cgroup sample.
func BenchmarkContainerSample(b *testing.B) {
	c := &clock{t0}
	r := newRec(b, b.TempDir(), "web-1", c, 0)
	b.ReportAllocs()
	for b.Loop() {
		r.Container(cg(c.add(time.Second), 200*MiB, 0, true))
	}
}

// BenchmarkSecondOf8Workers is one second of gwrap's idle life with 8 workers at 1 Hz: one cgroup
// sample and eight worker samples. ns/op over 1e9 is the share of one core the record costs.
func BenchmarkSecondOf8Workers(b *testing.B) {
	c := &clock{t0}
	r := newRec(b, b.TempDir(), "web-1", c, 0)
	ids := make([]probes.ID, 8)
	for i := range ids {
		ids[i] = probes.ID{PID: 200 + i, StartTime: uint64(i)}
	}
	b.ReportAllocs()
	for b.Loop() {
		now := c.add(time.Second)
		r.Container(cg(now, 200*MiB, 0, true))
		for _, id := range ids {
			r.Worker(id, worker(now, 60*MiB))
		}
	}
}

// BenchmarkPrevious is the start-up cost of reading a full record (two 256 KiB segments).
func BenchmarkPrevious(b *testing.B) {
	c := &clock{t0}
	dir := b.TempDir()
	r := newRec(b, dir, "web-1", c, 0)
	for i := 0; i < 5000; i++ {
		r.Worker(probes.ID{PID: 100 + i%8}, worker(c.add(time.Second/8), 60*MiB))
	}
	b.ReportAllocs()
	for b.Loop() {
		if rec, err := Previous(dir, "web-1"); rec == nil || err != nil {
			b.Fatal(rec, err)
		}
	}
}
