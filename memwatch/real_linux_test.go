package memwatch

import (
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

// TestRealOOMKillCountedBeforeTheReaping: the oom_kill counter moves while the victim is still
// there, dying of SIGKILL, before its parent reaps it — the test is the parent here and reaps
// only once the event came (were the counter to move only at the reaping, no event would come).
// The engine relies on it: it reads /proc as the event comes, to see which worker is being
// killed. The event also places the move: the counter's last unmoved read, or the notification,
// a few ms before.
func TestRealOOMKillCountedBeforeTheReaping(t *testing.T) {
	python := testkit.Python(t)
	cg := testkit.MemoryCgroup(t, 64<<20)
	c := openDir(t, cg.Dir, "memory")
	cmd := exec.Command(python, "-c", "import sys; sys.stdin.readline(); x = [bytearray(1<<20) for _ in range(400)]")
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := cg.Add(pid); err != nil {
		t.Fatal(err)
	}
	type seen struct {
		OOMEvent
		stat, status string
		err          error
	}
	events := make(chan seen, 4)
	ready := make(chan struct{})
	c.watching = func() { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		c.WatchOOM(ctx, func(e OOMEvent) {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			events <- seen{e, string(stat), string(status), err}
		}, func(msg string) { t.Errorf("degraded: %s", msg) })
	}()
	defer func() { cancel(); <-watchDone }()
	<-ready
	stdin.Write([]byte("go\n"))
	select {
	case e := <-events:
		if e.err != nil {
			t.Fatalf("the victim was gone when the counter moved: %v", e.err)
		}
		f := strings.Fields(e.stat[strings.LastIndexByte(e.stat, ')')+2:])
		state, exitCode := f[0], f[len(f)-1] // fields 3 and 52
		var shdPnd string
		for _, l := range strings.Split(e.status, "\n") {
			if v, ok := strings.CutPrefix(l, "ShdPnd:"); ok {
				shdPnd = strings.TrimSpace(v)
			}
		}
		t.Logf("as the counter moved the victim was in state %s, exit_code %s, ShdPnd %s; the counter was last seen unmoved %v before, the notification came %v before",
			state, exitCode, shdPnd, e.Time.Sub(e.After), e.Time.Sub(e.Woke))
		if !strings.HasSuffix(shdPnd, "100") && exitCode != "9" {
			t.Errorf("the victim was not dying of SIGKILL: state %s exit_code %s ShdPnd %s", state, exitCode, shdPnd)
		}
		// A notification woke the watcher: the move is placed within ms of it, by a read before
		// it or by the notification itself.
		if e.After.IsZero() || !e.After.Before(e.Time) || e.Woke.IsZero() || e.Woke.After(e.Time) ||
			e.Time.Sub(e.After) > 100*time.Millisecond && e.Time.Sub(e.Woke) > 100*time.Millisecond {
			t.Errorf("the move is not placed: last unmoved read %v, notification %v, event %v", e.After, e.Woke, e.Time)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no OOM event while the victim was not reaped")
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("the allocator was not killed: %v", err)
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
	if second.CPUQuotaCores < 0.099 || second.CPUQuotaCores > 0.101 {
		t.Errorf("quota %v cores, want 0.1", second.CPUQuotaCores)
	}
	if !second.CPUThrottled.Known || second.CPUThrottled.V <= first.CPUThrottled.V || second.ThrottledTime.V <= first.ThrottledTime.V {
		t.Errorf("not throttled: %+v → %+v, %+v → %+v", first.CPUThrottled, second.CPUThrottled, first.ThrottledTime, second.ThrottledTime)
	}
}
