package memwatch

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// hog is a python process in a cgroup that allocates or frees memory on command: "+N" keeps N
// MiB more, "-" frees everything (anonymous mappings of its own, so that freeing gives the memory
// back to the kernel at once), "~N" takes 2 MiB and gives it back N times; it answers each
// command with a line once done.
type hog struct {
	cmd *exec.Cmd
	in  *os.File
	out *bufio.Reader
}

func startHog(t *testing.T, cg *testkit.Cgroup) *hog {
	t.Helper()
	python := testkit.Python(t)
	prog := `
import mmap, sys
hoard = []
for line in sys.stdin:
    line = line.strip()
    if line.startswith("+"):
        for _ in range(int(line[1:])):
            m = mmap.mmap(-1, 1 << 20)
            m.write(b"x" * (1 << 20))
            hoard.append(m)
    elif line == "-":
        for m in hoard:
            m.close()
        hoard.clear()
    elif line.startswith("~"):
        for _ in range(int(line[1:])):
            m = mmap.mmap(-1, 2 << 20)
            m.write(b"x" * (2 << 20))
            m.close()
    print("done", flush=True)
`
	cmd := exec.Command(python, "-c", prog)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = pr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	t.Cleanup(func() { pw.Close(); cmd.Process.Kill(); cmd.Wait() })
	if err := cg.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	return &hog{cmd: cmd, in: pw, out: bufio.NewReader(stdout)}
}

func (h *hog) do(t *testing.T, c string) {
	t.Helper()
	if _, err := h.in.WriteString(c + "\n"); err != nil {
		t.Fatal(err)
	}
	if l, err := h.out.ReadString('\n'); err != nil || strings.TrimSpace(l) != "done" {
		t.Fatalf("hog %q: %q %v", c, l, err)
	}
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestRealNotifyThresholds: on v1, memory.usage_in_bytes thresholds registered through
// cgroup.event_control wake Notify when the usage climbs a step and when it falls a step, and
// nothing wakes it while the usage stays put; a fast climb wakes it once per step or so. Notify
// leaves no goroutine and no descriptor behind.
func TestRealNotifyThresholds(t *testing.T) {
	const limit = 256 << 20
	cg := testkit.MemoryCgroup(t, limit)
	c := openDir(t, cg.Dir, "memory")
	h := startHog(t, cg)

	before := c.Sample().Usage.V // Sample keeps its files open: count the descriptors after it
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	ctx, cancel := context.WithCancel(context.Background())
	wakes := make(chan Wake, 256)
	ready := make(chan *Notifier, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Notify(ctx, limit, NotifyOptions{}, func(w Wake) { wakes <- w },
			func(msg string) { t.Errorf("degraded: %s", msg) }, func(n *Notifier) { ready <- n })
	}()
	<-ready
	step := uint64(limit / 20) // 12.8 MiB

	expectWake := func(what string, d time.Duration) Wake {
		t.Helper()
		select {
		case w := <-wakes:
			if w.Reason != WakeThreshold || !w.Usage.Known {
				t.Fatalf("%s: wake %+v, want a threshold wake with the usage", what, w)
			}
			return w
		case <-time.After(d):
			t.Fatalf("%s: no wake within %v", what, d)
		}
		return Wake{}
	}
	// drain takes the wake-ups of a move until none came for 200 ms (the kernel checks thresholds
	// as it charges pages, so the last ones may come after the allocation returned).
	drain := func() int {
		n := 0
		for {
			select {
			case <-wakes:
				n++
			case <-time.After(200 * time.Millisecond):
				return n
			}
		}
	}
	quiet := func(what string) {
		t.Helper()
		select {
		case w := <-wakes:
			t.Fatalf("%s: woke (%+v) though the usage stayed put", what, w)
		case <-time.After(300 * time.Millisecond):
		}
	}

	quiet("idle")
	h.do(t, "+40") // 40 MiB: three steps up
	w := expectWake("40 MiB more", time.Second)
	// The usage is read after the kernel signalled: by then a CPU's unused pre-charge (the memcg
	// charge batch, MEMCG_CHARGE_BATCH = 64 pages, counted in the usage the threshold was checked
	// against) may have been given back. Seen in CI: 60 KB under the threshold.
	batch := uint64(64 * os.Getpagesize())
	if w.Usage.V+batch < before+step {
		t.Errorf("woke at usage %d, under the threshold %d by more than a charge batch", w.Usage.V, before+step)
	}
	drain()
	quiet("after the climb")
	h.do(t, "-") // frees the 40 MiB: below the lower threshold of the last pair
	expectWake("40 MiB freed", time.Second)
	drain()
	quiet("after the fall")

	// A fast climb: 150 MiB as fast as python allocates it.
	start := time.Now()
	h.do(t, "+150")
	took := time.Since(start)
	n := drain()
	t.Logf("150 MiB in %v: %d wake-ups (a step is %d MiB)", took.Round(time.Millisecond), n, step>>20)
	if n < 5 {
		t.Errorf("a 150 MiB climb woke %d times, want one every step or so (≥ 5 of ~11)", n)
	}

	// Wobbling across a level (2 MiB taken and given back 100 times, the usage 1 MiB under a
	// level): the usage does not move, so it wakes the caller once at most.
	u := c.Sample().Usage.V
	level := (u/step + 1) * step
	if k := (level - u) >> 20; k > 1 {
		h.do(t, fmt.Sprintf("+%d", k-1))
	}
	drain()
	h.do(t, "~100")
	if n := drain(); n > 1 {
		t.Errorf("wobbling across a level woke %d times, want 1 at most", n)
	}

	cancel()
	<-done
	for deadline := time.Now().Add(2 * time.Second); runtime.NumGoroutine() > goroutines && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > goroutines {
		t.Errorf("goroutines: %d before, %d after", goroutines, g)
	}
	if f := openFDs(t); f != fds {
		t.Errorf("descriptors: %d before, %d after", fds, f)
	}
}
