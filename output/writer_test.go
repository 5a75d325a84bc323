package output

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gwrap/gwrap/engine"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/internal/testkit"
	"github.com/gwrap/gwrap/supervisor"
)

// BenchmarkRelayLine is the per-line cost of the relay after the read: parse, JSON, write.
func BenchmarkRelayLine(b *testing.B) {
	line := []byte("[2026-11-25 03:42:30 +0000] [3601] [INFO] GET /items/12345 handled in 12 ms")
	for _, format := range []string{"json", "text"} {
		b.Run(format, func(b *testing.B) {
			out := NewWriter(io.Discard, io.Discard, format, time.Now)
			a := gunicorn.NewAssembler(200, 64<<10)
			b.ReportAllocs()
			for b.Loop() {
				ev, _ := a.Add(line)
				out.relay(supervisor.StreamStderr, line, ev)
			}
		})
	}
}

// gate is a stdout that blocks every write until it is opened: a stalled reader.
type gate struct {
	open chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
}

func newGate() *gate { return &gate{open: make(chan struct{})} }

func (g *gate) Write(p []byte) (int, error) {
	<-g.open
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.Write(p)
}

func (g *gate) lines(t *testing.T) []map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(g.buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// returnsWithin fails the test when f blocks longer than d.
func returnsWithin(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s blocked on a stalled stdout", what)
	}
}

// TestOutputNeverBlocks: with stdout stalled, events and relayed lines return at once; beyond the
// queue's bound lines are dropped and counted, never waited for.
func TestOutputNeverBlocks(t *testing.T) {
	g := newGate()
	var notices testkit.Buffer
	out := NewWriter(g, &notices, "json", time.Now)
	line := []byte("[2026-11-25 03:42:30 +0000] [3601] [INFO] GET / 200")
	returnsWithin(t, 10*time.Second, "writing 2×queueMaxLines lines", func() {
		for i := 0; i < 2*queueMaxLines; i++ {
			out.relay(supervisor.StreamStderr, line, gunicorn.Event{})
		}
		out.Emit(engine.Event{Name: "signal", Message: "forwarded SIGTERM"})
	})
	if lost := out.Lost(); lost < queueMaxLines/2 { // the writer holds one batch of them
		t.Errorf("%d lines counted as lost, want about %d", lost, queueMaxLines)
	}
	var lost uint64
	returnsWithin(t, 5*time.Second, "finish", func() {
		lost = out.Finish(func() { out.Emit(engine.Event{Name: "gwrap.exit", Message: "bye"}) }, 100*time.Millisecond, &notices)
	})
	if lost < queueMaxLines {
		t.Errorf("finish counts %d lost", lost)
	}
	close(g.open)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(notices.String(), "lines of output lost") {
		if time.Now().After(deadline) {
			t.Fatalf("stderr notices:\n%s", notices.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(notices.String(), "not keeping up"); n != 1 {
		t.Errorf("the drop said %d times on stderr, want once:\n%s", n, notices.String())
	}
}

// TestOutputTimestampsWhenItHappens: a line waiting for a stalled stdout keeps the time it was
// made, not the time it is written; relayed lines and events keep their order.
func TestOutputTimestampsWhenItHappens(t *testing.T) {
	g := newGate()
	var mu sync.Mutex
	clock := time.Date(2026, 11, 25, 3, 42, 30, 0, time.UTC)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	out := NewWriter(g, io.Discard, "json", now)
	out.Emit(engine.Event{Name: "signal", Message: "forwarded SIGTERM"})
	out.relay(supervisor.StreamStderr, []byte("a line"), gunicorn.Event{})
	mu.Lock()
	clock = clock.Add(25 * time.Second)
	mu.Unlock()
	close(g.open)
	out.Finish(func() { out.Emit(engine.Event{Name: "gwrap.exit", Message: "bye"}) }, 5*time.Second, io.Discard)
	ls := g.lines(t)
	if len(ls) != 3 || ls[0]["event"] != "signal" || ls[1]["line"] != "a line" || ls[2]["event"] != "gwrap.exit" {
		t.Fatalf("lines %v", ls)
	}
	if ls[0]["time"] != "2026-11-25T03:42:30Z" || ls[2]["time"] != "2026-11-25T03:42:55Z" {
		t.Errorf("times %v, %v: want when each was made", ls[0]["time"], ls[2]["time"])
	}
}
