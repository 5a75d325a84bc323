package engine

import (
	"testing"
	"time"

	"github.com/gwrap/gwrap/memwatch"
)

// TestAnOOMKillTheSweepSawIsNeverCrashed: the OOM watcher's event can come late (after a wake-up
// it re-reads the counter for two seconds only, then polls every 10 s; seen in the v2 guest) or
// not at all, while the sweep reads the same counter. A SIGKILLed worker is not reported
// "crashed" while the sweep shows a move no event reported: the move stands for the event, and
// an event that comes after it is not counted twice.
func TestAnOOMKillTheSweepSawIsNeverCrashed(t *testing.T) {
	for _, c := range []struct {
		name  string
		event time.Duration // when the watcher's event comes after the kill (0: never)
	}{
		{"no event", 0},
		{"the event within the wait", 500 * time.Millisecond},
		{"the event after the sweep's reading was taken", 8 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(gunicorn201)
			w.fork(101, at(0))
			w.fork(102, at(0))
			w.healthy(101, at(0), at(9))
			w.healthy(102, at(0), at(9))
			w.proc.kill(102)
			w.ooms++ // the kernel counts the kill, then sends the SIGKILL
			w.proc.reap(102)
			w.line(at(9.3), master, "WARNING", "Worker with pid 102 was terminated due to signal 9")
			w.vanish(102, at(9.4))
			kill := at(9.2)
			for t := at(10); !t.After(at(20)); t = t.Add(500 * time.Millisecond) {
				if c.event != 0 && !t.Before(kill.Add(c.event)) && t.Before(kill.Add(c.event).Add(500*time.Millisecond)) {
					at := kill.Add(c.event)
					w.st.oom(oomIn{ev: memwatch.OOMEvent{Time: at, After: at.Add(-time.Second), Count: 1, Total: w.ooms}}, at)
				}
				w.sweep(101, t, 0, 40<<20)
			}
			w.end(at(20))
			if got := w.verdicts(); got != "102 oom_killed" {
				t.Fatalf("verdicts %q, want 102 oom_killed", got)
			}
			if n := len(w.rec.named("oom.kill")); n != 1 {
				t.Errorf("%d oom.kill events for one kill", n)
			}
		})
	}
}
