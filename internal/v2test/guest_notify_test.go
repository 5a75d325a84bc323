//go:build v2guest && linux

package v2test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gwrap/gwrap/memwatch"
)

// hogV2 is a python process in the cgroup that takes memory on command ("+N": N MiB more) and
// answers "done" once it has.
const hogV2 = `
import mmap, sys
hoard = []
print("ready", flush=True)
for line in sys.stdin:
    for _ in range(int(line.strip()[1:])):
        m = mmap.mmap(-1, 1 << 20)
        m.write(b"x" * (1 << 20))
        hoard.append(m)
    print("done", flush=True)
`

// TestNotifyV2: on cgroup v2 memwatch.Notify registers a memory.pressure trigger, wakes when
// memory.current climbs a step while above 40 % of the limit (v2 has no usage threshold: it is
// read ten times a second there, and not at all below), and wakes when memory.events changes
// (here: the OOM kill of the hog, pushed past memory.max).
func TestNotifyV2(t *testing.T) {
	const limit = 256 << 20
	c := newCgroup(t, "gwrap-notify", "memory.max", fmt.Sprint(limit))
	cmd := c.command(t, "python3", "-c", hogV2)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	out := bufio.NewReader(stdout)
	line := func() string { l, _ := out.ReadString('\n'); return strings.TrimSpace(l) }
	if l := line(); l != "ready" {
		t.Fatalf("hog: %q", l)
	}
	take := func(mib int) {
		t.Helper()
		if _, err := io.WriteString(stdin, fmt.Sprintf("+%d\n", mib)); err != nil {
			t.Fatal(err)
		}
		if l := line(); l != "done" {
			t.Fatalf("hog +%d: %q", mib, l)
		}
	}

	cg, err := memwatch.Open(memwatch.Options{Path: c.Path})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		wakes    []memwatch.Wake
		warnings []string
	)
	reasons := func() map[memwatch.WakeReason]int {
		mu.Lock()
		defer mu.Unlock()
		m := map[memwatch.WakeReason]int{}
		for _, w := range wakes {
			m[w.Reason]++
		}
		return m
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *memwatch.Notifier, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		cg.Notify(ctx, limit, memwatch.NotifyOptions{},
			func(w memwatch.Wake) { mu.Lock(); wakes = append(wakes, w); mu.Unlock() },
			func(msg string) { mu.Lock(); warnings = append(warnings, msg); mu.Unlock() },
			func(n *memwatch.Notifier) { ready <- n })
	}()
	n := <-ready
	t.Cleanup(func() { cancel(); <-done })
	mu.Lock()
	if len(warnings) > 0 {
		t.Errorf("degraded on real v2: %q", warnings)
	}
	mu.Unlock()

	// Below 40 %: nothing reads memory.current, nothing wakes.
	take(60)
	n.Observe(cg.Sample().Usage.V)
	time.Sleep(500 * time.Millisecond)
	if r := reasons(); r[memwatch.WakeClimb] != 0 {
		t.Errorf("woke below 40 %% of the limit: %v", r)
	}
	// Above 40 % (as the sweep's sample tells it), a climb of 100 MiB wakes once a step (12.8 MiB).
	take(50)
	n.Observe(cg.Sample().Usage.V) // the climb is measured from here
	start := time.Now()
	take(100)
	took := time.Since(start)
	waitFor(t, 5*time.Second, "the climb's wake-ups", func() bool { return reasons()[memwatch.WakeClimb] >= 3 })
	climbs := reasons()[memwatch.WakeClimb]
	measure(t, "notify_v2_climb", "100 MiB in %v: %d wake-ups (a step is %d MiB)", took.Round(time.Millisecond), climbs, limit/20>>20)

	// Past memory.max: the OOM kill changes memory.events.
	_, _ = io.WriteString(stdin, "+300\n")
	waitFor(t, 30*time.Second, "a memory.events wake-up", func() bool { return reasons()[memwatch.WakeEvents] >= 1 })
	r := reasons()
	measure(t, "notify_v2_events", "oom_kill=%d wake-ups by reason %v", c.key(t, "memory.events", "oom_kill"), r)
}
