package memwatch

import (
	"context"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// openDir opens the cgroup whose v1 memory directory is dir, through the real /proc and /sys.
func openDir(t *testing.T, dir, ctrl string) *Cgroup {
	t.Helper()
	rel := strings.TrimPrefix(dir, "/sys/fs/cgroup/"+ctrl)
	c, err := Open(Options{Path: rel})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRealOOMKill: a process allocating past a 64 MiB limit is OOM-killed; WatchOOM reports it
// with the counter's delta, well within a second, and leaves no goroutine behind.
func TestRealOOMKill(t *testing.T) {
	python := testkit.Python(t)
	cg := testkit.MemoryCgroup(t, 64<<20)
	c := openDir(t, cg.Dir, "memory")
	if c.Dir() != cg.Dir {
		t.Fatalf("opened %s, want %s", c.Dir(), cg.Dir)
	}
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan OOMEvent, 4)
	watchDone := make(chan struct{})
	go func() {
		c.WatchOOM(ctx, func(e OOMEvent) { events <- e }, func(msg string) { t.Errorf("degraded: %s", msg) })
		close(watchDone)
	}()

	cmd := exec.Command(python, "-c", "import sys; sys.stdin.readline(); x = [bytearray(1<<20) for _ in range(400)]")
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := cg.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stdin.Write([]byte("go\n"))
	err := cmd.Wait()
	killed := time.Now()
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("the allocator was not killed: %v", err)
	}
	select {
	case e := <-events:
		if e.Count != 1 || e.Total != 1 {
			t.Errorf("event %+v, want count 1 total 1", e)
		}
		t.Logf("OOM event %v after the allocation started, %v after the victim's exit was seen", e.Time.Sub(start), e.Time.Sub(killed))
		if lag := e.Time.Sub(killed); lag > 500*time.Millisecond {
			t.Errorf("OOM event came %v after the kill", lag)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no OOM event")
	}
	if st := c.Sample(); !st.OOMKill.Known || st.OOMKill.V != 1 || !st.Limit.Known || st.Limit.V != 64<<20 {
		t.Errorf("sample after the kill: oom_kill %+v limit %+v", st.OOMKill, st.Limit)
	} else if !st.Peak.Known || st.Peak.V < 60<<20 || st.Peak.V > 64<<20 {
		// The victim's memory is freed, but the kernel's peak still says it reached the limit.
		t.Errorf("peak after the kill %+v, want the 64 MiB limit reached (usage now %+v)", st.Peak, st.Usage)
	}
	cancel()
	<-watchDone
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("goroutines: %d before, %d after", before, n)
	}
}

// TestRealCPUThrottling: a spinning process under a 0.1-core CFS quota is throttled, and the
// quota reads 0.1 cores.
func TestRealCPUThrottling(t *testing.T) {
	cg := testkit.CPUCgroup(t, 0.1)
	cmd := exec.Command("/bin/sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := cg.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	// Read the cgroups of the spinning process, as gwrap reads its own.
	c, err := Open(Options{PID: cmd.Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	first := c.Sample()
	time.Sleep(600 * time.Millisecond)
	second := c.Sample()
	if q := second.CPUQuota; !q.Known || q.V < 0.099 || q.V > 0.101 {
		t.Errorf("quota %+v cores, want 0.1", q)
	}
	if !second.CPUThrottled.Known || second.CPUThrottled.V <= first.CPUThrottled.V || second.ThrottledTime.V <= first.ThrottledTime.V {
		t.Errorf("not throttled: %+v → %+v, %+v → %+v", first.CPUThrottled, second.CPUThrottled, first.ThrottledTime, second.ThrottledTime)
	}
}
