//go:build v2guest && linux

package v2test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/memwatch"
)

// TestMain lets the cases run this binary again as a helper inside namespaces they make:
// V2TEST_HELPER=discover prints what memwatch discovers for the helper itself, as JSON.
func TestMain(m *testing.M) {
	if os.Getenv("V2TEST_HELPER") == "discover" {
		os.Exit(discoverHelper())
	}
	os.Exit(m.Run())
}

// discovered is what the discover helper prints.
type discovered struct {
	ProcCgroup string         `json:"proc_cgroup"`
	Err        string         `json:"err,omitempty"`
	Version    int            `json:"version"`
	Path       string         `json:"path"`
	Dir        string         `json:"dir"`
	Stats      memwatch.Stats `json:"stats"`
}

func discoverHelper() int {
	var d discovered
	b, _ := os.ReadFile("/proc/self/cgroup")
	d.ProcCgroup = strings.TrimSpace(string(b))
	if c, err := memwatch.Open(memwatch.Options{}); err != nil {
		d.Err = err.Error()
	} else {
		d.Version, d.Path, d.Dir, d.Stats = c.Version(), c.Path(), c.Dir(), c.Sample()
	}
	if err := json.NewEncoder(os.Stdout).Encode(d); err != nil {
		return 1
	}
	return 0
}

// runDiscover runs the discover helper through cmd's program (this binary, or a wrapper that
// execs it) and returns what it found.
func runDiscover(t *testing.T, cmd *exec.Cmd) discovered {
	t.Helper()
	cmd.Env = append(os.Environ(), "V2TEST_HELPER=discover")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	var d discovered
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	return d
}

func self(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// TestDiscoveryRoot: a process in the root cgroup. The v2 root has no memory.current or
// memory.max (its accounting is the whole machine's), so memwatch finds no container cgroup and
// says why, rather than reporting zeros.
func TestDiscoveryRoot(t *testing.T) {
	d := runDiscover(t, exec.Command(self(t)))
	if d.ProcCgroup != "0::/" {
		t.Fatalf("the helper is not in the root cgroup: %q", d.ProcCgroup)
	}
	if d.Err == "" || !strings.Contains(d.Err, "memory.current") {
		t.Errorf("at the root: %+v, want ErrNoCgroup naming memory.current", d)
	}
	t.Logf("at the root: %s", d.Err)
}

// TestDiscoveryChild: a process in a child cgroup with its own memory.max.
func TestDiscoveryChild(t *testing.T) {
	c := newCgroup(t, "gwrap-child", "memory.max", fmt.Sprint(256<<20))
	d := runDiscover(t, c.command(t, self(t)))
	if d.Err != "" || d.Version != 2 || d.Path != c.Path || d.Dir != c.Dir {
		t.Fatalf("discovered %+v, want v2 %s in %s", d, c.Path, c.Dir)
	}
	st := d.Stats
	if !st.Limit.Known || st.Limit.V != 256<<20 || st.LimitPath != c.Dir {
		t.Errorf("limit %+v from %q, want 256 MiB from %s", st.Limit, st.LimitPath, c.Dir)
	}
	if !st.Usage.Known || st.Usage.V == 0 || !st.PSI.Known || st.PSI.HostWide {
		t.Errorf("usage %+v psi %+v: want a known usage and the cgroup's own PSI", st.Usage, st.PSI)
	}
}

// TestDiscoveryWalksUp: only the parent sets memory.max and cpu.max (a Kubernetes pod-level
// limit); the child's process finds both on the way up.
func TestDiscoveryWalksUp(t *testing.T) {
	p := newCgroup(t, "gwrap-pod", "memory.max", fmt.Sprint(300<<20), "cpu.max", "50000 100000",
		"cgroup.subtree_control", "+memory +cpu +pids")
	c := newCgroup(t, "gwrap-pod/ctr")
	if got := c.read(t, "memory.max"); got != "max" {
		t.Fatalf("child memory.max %q, want max", got)
	}
	d := runDiscover(t, c.command(t, self(t)))
	if d.Err != "" || d.Dir != c.Dir {
		t.Fatalf("discovered %+v, want %s", d, c.Dir)
	}
	if st := d.Stats; !st.Limit.Known || st.Limit.V != 300<<20 || st.LimitPath != p.Dir {
		t.Errorf("limit %+v from %q, want 300 MiB from the parent %s", st.Limit, st.LimitPath, p.Dir)
	}
	if q := d.Stats.CPUQuotaCores; q < 0.499 || q > 0.501 {
		t.Errorf("cpu quota %v cores, want the parent's 0.5", q)
	}
}

// TestDiscoveryCgroupNamespace: inside a cgroup namespace with cgroup2 mounted there, as
// container runtimes do (the host's mount replaced by one made inside the namespace), the process sees itself at "/" and the mount's root is its own cgroup.
func TestDiscoveryCgroupNamespace(t *testing.T) {
	c := newCgroup(t, "gwrap-ns", "memory.max", fmt.Sprint(200<<20))
	cmd := c.command(t, "unshare", "--cgroup", "--mount", "--propagation", "private", "sh", "-c",
		`umount /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$0"`, self(t))
	d := runDiscover(t, cmd)
	if d.ProcCgroup != "0::/" {
		t.Fatalf("not in a cgroup namespace: /proc/self/cgroup %q", d.ProcCgroup)
	}
	if d.Err != "" || d.Version != 2 || d.Path != "/" || d.Dir != cgRoot {
		t.Fatalf("discovered %+v, want v2 / in %s", d, cgRoot)
	}
	if st := d.Stats; !st.Limit.Known || st.Limit.V != 200<<20 || !st.Usage.Known {
		t.Errorf("limit %+v usage %+v, want 200 MiB and a known usage", st.Limit, st.Usage)
	}
}

// TestSampleMemory: anonymous memory plus page cache under memory.high: usage, working set
// (usage − inactive file), the limit, memory.high and its hits, per-cgroup PSI.
func TestSampleMemory(t *testing.T) {
	c := newCgroup(t, "gwrap-mem", "memory.max", fmt.Sprint(128<<20), "memory.high", fmt.Sprint(48<<20))
	// 24 MiB of anonymous memory, then 96 MiB of files read through the page cache: the largest
	// libraries of the guest's root, which is the host's over 9p with the page cache on (reading
	// many small files over 9p is slow under emulation).
	app := `
import os, sys
hoard = bytearray(24 << 20)
for i in range(0, len(hoard), 4096): hoard[i] = 1
top = "/usr/lib/x86_64-linux-gnu"
files = [os.path.join(top, f) for f in os.listdir(top)]
files = sorted((p for p in files if os.path.isfile(p) and not os.path.islink(p)), key=os.path.getsize, reverse=True)
left = 96 << 20
for p in files:
    with open(p, "rb") as fh:
        while left > 0:
            b = fh.read(1 << 20)
            if not b: break
            left -= len(b)
    if left <= 0: break
if left > 0: sys.exit("only read %d MiB" % ((96 << 20) - left >> 20))
print("ready", flush=True)
sys.stdin.read()
`
	cmd := c.command(t, "python3", "-c", app)
	stdin, _ := cmd.StdinPipe()
	t.Cleanup(func() { stdin.Close() })
	startReady(t, cmd, 5*time.Minute)
	cg, err := memwatch.Open(memwatch.Options{PID: cmd.Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	st := cg.Sample()
	t.Logf("sample: %+v", st)
	if len(st.Missing) > 0 {
		t.Errorf("missing on real v2: %v", st.Missing)
	}
	if !st.Usage.Known || st.Usage.V < 24<<20 || st.Usage.V > 128<<20 {
		t.Errorf("usage %+v, want 24..128 MiB", st.Usage)
	}
	if !st.Anon.Known || st.Anon.V < 24<<20 || !st.File.Known || st.File.V == 0 {
		t.Errorf("anon %+v file %+v, want ≥ 24 MiB anon and some file pages", st.Anon, st.File)
	}
	if !st.WorkingSet.Known || st.WorkingSet.V > st.Usage.V || st.WorkingSet.V < st.Anon.V {
		t.Errorf("working set %+v, want anon %d ≤ it ≤ usage %d", st.WorkingSet, st.Anon.V, st.Usage.V)
	}
	if !st.Limit.Known || st.Limit.V != 128<<20 || !st.High.Known || st.High.V != 48<<20 {
		t.Errorf("limit %+v high %+v, want 128 MiB and 48 MiB", st.Limit, st.High)
	}
	// memory.events "high" counts reclaim passes over memory.high; memwatch does not read it
	// (Stats has the limit's hits, "max"), so it is read here to show the case happened.
	high := c.key(t, "memory.events", "high")
	if high == 0 {
		t.Errorf("memory.events high is 0 after reading 96 MiB under a 48 MiB memory.high")
	}
	if !st.LimitHits.Known || !st.OOM.Known || !st.OOMKill.Known || st.OOMKill.V != 0 {
		t.Errorf("limit hits %+v oom %+v oom_kill %+v: want all known, no kill", st.LimitHits, st.OOM, st.OOMKill)
	}
	if !st.PSI.Known || st.PSI.HostWide {
		t.Errorf("PSI %+v, want the cgroup's own", st.PSI)
	}
	measure(t, "sample_memory", "usage=%d working_set=%d anon=%d file=%d high_events=%d max_events=%d psi_mem_some10=%.2f",
		st.Usage.V, st.WorkingSet.V, st.Anon.V, st.File.V, high, st.LimitHits.V, st.PSI.MemorySome10)
	// memory.peak (kernel ≥ 5.19): memwatch.Stats has no field for it on this branch.
	if b, err := os.ReadFile(c.Dir + "/memory.peak"); err == nil {
		measure(t, "memory_peak_file", "present=%s", strings.TrimSpace(string(b)))
	} else {
		measure(t, "memory_peak_file", "absent (%v)", err)
	}
}

// TestCPUQuotaThrottling: a spinning shell under a 0.2-core cpu.max is throttled: the quota
// reads 0.2 cores and the throttling counters move. No CPU speed is judged.
func TestCPUQuotaThrottling(t *testing.T) {
	c := newCgroup(t, "gwrap-cpu", "cpu.max", "20000 100000")
	cmd := c.command(t, "sh", "-c", "echo ready; while :; do :; done")
	startReady(t, cmd, time.Minute)
	cg, err := memwatch.Open(memwatch.Options{PID: cmd.Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	first := cg.Sample()
	if q := first.CPUQuotaCores; q < 0.199 || q > 0.201 {
		t.Errorf("quota %v cores, want 0.2", q)
	}
	var last memwatch.Stats
	waitFor(t, 30*time.Second, "throttling counters move", func() bool {
		last = cg.Sample()
		return last.CPUThrottled.Known && last.CPUThrottled.V > first.CPUThrottled.V &&
			last.ThrottledTime.V > first.ThrottledTime.V && last.CPUPeriods.V > first.CPUPeriods.V
	})
	if !last.CPUUsage.Known || last.CPUUsage.V <= first.CPUUsage.V {
		t.Errorf("cpu usage %+v → %+v", first.CPUUsage, last.CPUUsage)
	}
	if !last.PSI.Known || last.PSI.HostWide {
		t.Errorf("PSI %+v, want the cgroup's own", last.PSI)
	}
	measure(t, "cpu_throttling", "periods=%d throttled=%d throttled_ns=%d psi_cpu_some10=%.2f",
		last.CPUPeriods.V, last.CPUThrottled.V, last.ThrottledTime.V, last.PSI.CPUSome10)
}

// TestOOMKillEvent: a process allocating past memory.max is OOM-killed; WatchOOM (inotify on
// memory.events) reports it once, with the counter's delta. The delay from the moment the victim's
// death is seen to the event is measured under emulation.
func TestOOMKillEvent(t *testing.T) {
	c := newCgroup(t, "gwrap-oom", "memory.max", fmt.Sprint(64<<20))
	cg, err := memwatch.Open(memwatch.Options{Path: c.Path})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	type got struct {
		memwatch.OOMEvent
		mono time.Duration // CLOCK_MONOTONIC when it was emitted
	}
	events := make(chan got, 4)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		cg.WatchOOM(ctx, func(e memwatch.OOMEvent) { events <- got{e, monotonic()} }, func(msg string) { t.Errorf("degraded: %s", msg) })
	}()
	defer func() { cancel(); <-watchDone }()
	// WatchOOM reads the starting counter and sets up inotify before it blocks; the allocator
	// waits for a line on stdin, sent once the counter it would move is still 0 after a sample.
	cmd := c.command(t, "python3", "-c", "import sys; print('ready', flush=True); sys.stdin.readline(); x = [bytearray(1<<20) for _ in range(400)]")
	stdin, _ := cmd.StdinPipe()
	startReady(t, cmd, time.Minute)
	if st := cg.Sample(); !st.OOMKill.Known || st.OOMKill.V != 0 {
		t.Fatalf("oom_kill before the allocation: %+v", st.OOMKill)
	}
	start := time.Now()
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	werr := cmd.Wait()
	seen := time.Now()
	if werr == nil || !strings.Contains(werr.Error(), "killed") {
		t.Fatalf("the allocator was not killed: %v", werr)
	}
	select {
	case e := <-events:
		if e.Count != 1 || e.Total != 1 {
			t.Errorf("event %+v, want count 1 total 1", e)
		}
		// The kill's moment is the kernel's own log line for it, on the kernel log's clock.
		kills := kmsgTimes(t, fmt.Sprintf("Killed process %d ", cmd.Process.Pid))
		if len(kills) != 1 {
			t.Fatalf("the kernel logged %d kills of %d", len(kills), cmd.Process.Pid)
		}
		off, errBound := kmsgOffset(t)
		lag := e.mono - off - kills[0]
		measure(t, "oom_event", "after_kill=%v (clock error ≤ %v) after_alloc_start=%v after_victim_exit_seen=%v",
			lag.Round(time.Millisecond), errBound.Round(time.Microsecond), e.Time.Sub(start).Round(time.Millisecond), e.Time.Sub(seen).Round(time.Millisecond))
		// 100 ms is the goal on real hardware; under software emulation allow 1 s.
		if lag > time.Second || lag < -errBound-time.Millisecond {
			t.Errorf("the OOM event came %v after the kernel's kill", lag)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no OOM event")
	}
	select {
	case e := <-events:
		t.Errorf("a second event for one kill: %+v", e)
	case <-time.After(500 * time.Millisecond):
	}
	if n := c.key(t, "memory.events", "oom_kill"); n != 1 {
		t.Errorf("memory.events oom_kill %d, want 1", n)
	}
	if st := cg.Sample(); !st.OOMKill.Known || st.OOMKill.V != 1 || !st.LimitHits.Known || st.LimitHits.V == 0 {
		t.Errorf("after the kill: oom_kill %+v max hits %+v", st.OOMKill, st.LimitHits)
	}
}

// TestOOMKillCountedBeforeTheReaping: on v2 as on v1, memory.events' oom_kill moves while the
// victim is still there, dying of SIGKILL, before its parent reaps it — the test is the parent
// and reaps only once the event came. gwrap's engine relies on it: it reads the master's children
// as the event comes to see which worker is being killed.
func TestOOMKillCountedBeforeTheReaping(t *testing.T) {
	c := newCgroup(t, "gwrap-oomreap", "memory.max", fmt.Sprint(64<<20))
	cg, err := memwatch.Open(memwatch.Options{Path: c.Path})
	if err != nil {
		t.Fatal(err)
	}
	type seen struct {
		memwatch.OOMEvent
		stat, status string
		err          error
	}
	events := make(chan seen, 4)
	pid := make(chan int, 1)
	ctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		victim := 0
		cg.WatchOOM(ctx, func(e memwatch.OOMEvent) {
			if victim == 0 {
				victim = <-pid
			}
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", victim))
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", victim))
			events <- seen{e, string(stat), string(status), err}
		}, func(msg string) { t.Errorf("degraded: %s", msg) })
	}()
	defer func() { cancel(); <-watchDone }()
	cmd := c.command(t, "python3", "-c", "import sys; print('ready', flush=True); sys.stdin.readline(); x = [bytearray(1<<20) for _ in range(400)]")
	stdin, _ := cmd.StdinPipe()
	startReady(t, cmd, time.Minute) // the watcher is set up by now
	pid <- cmd.Process.Pid
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
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
		measure(t, "oom_counted_before_reaping", "state=%s exit_code=%s shdpnd=%s last_unmoved_read=%v notified=%v before the event",
			state, exitCode, shdPnd, e.Time.Sub(e.After).Round(time.Microsecond), e.Time.Sub(e.Woke).Round(time.Microsecond))
		if !strings.HasSuffix(shdPnd, "100") && exitCode != "9" {
			t.Errorf("the victim was not dying of SIGKILL: state %s exit_code %s ShdPnd %s", state, exitCode, shdPnd)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no OOM event while the victim was not reaped")
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("the allocator was not killed: %v", err)
	}
}
