package engine

import (
	"math"
	"strings"
	"testing"
	"time"
)

// TestReportsStateTheGrowth: an oom_killed or memory_pressure report states how fast the
// container's memory grew and since when (incident.memory_growth and its summary), with the
// forecast's figures up to the death, even though the kill gave the memory back before the
// report was made; a report of another cause, or of memory that did not grow, does not.
func TestReportsStateTheGrowth(t *testing.T) {
	const mb = 1 << 20
	oomAt := func(w *world, pid int, kill float64) {
		w.proc.kill(pid)
		w.oom(at(kill), 3*time.Millisecond, 1)
		w.proc.reap(pid)
		w.line(at(kill+0.01), master, "WARNING", "Worker with pid 101 was terminated due to signal 9")
		w.fork(102, at(kill+0.05))
		w.healthy(102, at(kill+0.5), at(kill+4.5))
		w.vanish(pid, at(kill+0.6))
		w.end(at(kill + 5))
	}
	for _, c := range []struct {
		name   string
		ws     func(s float64) float64 // MiB at s seconds; nil: 120 MiB throughout
		run    func(w *world)
		cause  string
		growth bool
		rate   float64 // MiB/s, ±10 %
		fitted bool
		since  float64 // seconds, ±1.5: the last sample within the noise (4 MiB) of the floor
		words  string  // in the summary
	}{
		{name: "a leak of 2.5 MiB/s OOM-killed at 75 s", cause: "oom_killed", growth: true, rate: 2.5, fitted: true, since: 1,
			words: "the container's memory had grown 2.5 MiB/s since 06:00:01 UTC (from 60.0 MiB to 247.5 MiB)",
			ws: func(s float64) float64 {
				if s > 75.2 {
					return 60 // the kill gave it back
				}
				return 60 + 2.5*s
			}, run: func(w *world) {
				w.fork(101, at(0))
				w.healthy(101, at(0), at(75))
				oomAt(w, 101, 75.5)
			}},
		{name: "flat for 20 s, then a leak of 4 MiB/s", cause: "oom_killed", growth: true, rate: 4, fitted: true, since: 20,
			words: "the container's memory had grown 4.0 MiB/s since 06:00:2",
			ws: func(s float64) float64 {
				if s > 60.2 {
					return 80
				}
				return 80 + 4*math.Max(0, s-20)
			}, run: func(w *world) {
				w.fork(101, at(0))
				w.healthy(101, at(0), at(60))
				oomAt(w, 101, 60.5)
			}},
		{name: "a fill from half the limit to the limit in half a second, sampled at 10 Hz", cause: "oom_killed", growth: true, rate: 256, fitted: false, since: 10,
			words: "the container's memory had grown 256.0 MiB/s on average since 06:00:10 UTC (from 128.0 MiB to 256.0 MiB)",
			ws: func(s float64) float64 {
				if s > 10.55 {
					return 60
				}
				return 128 + 256*min(math.Max(0, s-10), 0.5)
			}, run: func(w *world) {
				w.fork(101, at(0))
				w.healthy(101, at(0), at(10))
				for i := 1; i <= 5; i++ {
					w.sweep(101, at(10+float64(i)/10), 0, 40*mb)
				}
				oomAt(w, 101, 10.55)
			}},
		{name: "an OOM kill while memory sat flat: no growth to state", cause: "oom_killed", run: func(w *world) {
			w.fork(101, at(0))
			w.healthy(101, at(0), at(30))
			oomAt(w, 101, 30.5)
		}},
		{name: "a timeout near the limit after a leak", cause: "memory_pressure", growth: true, rate: 2, fitted: true, since: 2,
			words: "the container's memory had grown 2.0 MiB/s since 06:00:0",
			ws:    func(s float64) float64 { return 110 + 2*s },
			run: func(w *world) {
				w.fork(101, at(0))
				w.healthy(101, at(0), at(60))
				w.silent(101, at(60), at(64))
				w.line(at(64.2), master, "CRITICAL", "WORKER TIMEOUT (pid:101)")
				w.proc.kill(101)
				w.proc.reap(101)
				w.line(at(65.2), master, "ERROR", "Worker (pid:101) was sent SIGKILL! Perhaps out of memory?")
				w.vanish(101, at(65.5))
				w.end(at(66))
			}},
		{name: "a blocked timeout while memory grew: not a memory verdict, no growth told", cause: "blocked",
			ws: func(s float64) float64 { return 60 + s },
			run: func(w *world) {
				w.fork(101, at(0))
				w.healthy(101, at(0), at(30))
				w.silent(101, at(30), at(34))
				w.line(at(34.2), master, "CRITICAL", "WORKER TIMEOUT (pid:101)")
				w.line(at(34.21), 101, "INFO", "Worker exiting (pid: 101)")
				w.proc.exit(101, 1<<8)
				w.proc.reap(101)
				w.vanish(101, at(34.5))
				w.end(at(35))
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(gunicorn201)
			if c.ws != nil {
				w.ws = func(t time.Time) uint64 { return uint64(c.ws(t.Sub(t0).Seconds()) * mb) }
			}
			c.run(w)
			r, ok := w.report(101)
			if !ok {
				t.Fatalf("no report for 101: %s", w.verdicts())
			}
			if string(r.Verdict.Cause) != c.cause {
				t.Fatalf("cause %s, want %s: %s", r.Verdict.Cause, c.cause, r.Verdict.Summary)
			}
			g := r.Incident.MemoryGrowth
			if !c.growth {
				if g != nil || strings.Contains(r.Verdict.Summary, "had grown") {
					t.Fatalf("growth stated: %+v\n%s", g, r.Verdict.Summary)
				}
				return
			}
			if g == nil {
				t.Fatalf("no memory_growth: %s", r.Verdict.Summary)
			}
			if got := g.BytesPerSecond / mb; math.Abs(got-c.rate) > c.rate/10 {
				t.Errorf("%.2f MiB/s, want %.2f", got, c.rate)
			}
			if s := g.Since.Sub(t0).Seconds(); math.Abs(s-c.since) > 1.5 {
				t.Errorf("since %.1f s, want %.1f", s, c.since)
			}
			if g.Fitted != c.fitted || g.At.After(r.Incident.At) || g.WorkingSetBytes <= g.FromBytes {
				t.Errorf("fitted %v (want %v), at %v (incident %v), from %d to %d", g.Fitted, c.fitted, g.At, r.Incident.At, g.FromBytes, g.WorkingSetBytes)
			}
			if !strings.Contains(r.Verdict.Summary, c.words) {
				t.Errorf("summary does not say %q:\n%s", c.words, r.Verdict.Summary)
			}
		})
	}
}
