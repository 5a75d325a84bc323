package postmortem

import (
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/internal/testkit"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
)

// TestRealOOMVerdictQuotesThePeakBeforeTheKill: a worker (the child of a master, as Gunicorn's
// are) grows inside a real 96 MiB memory cgroup until the kernel kills it, sampled by the real
// watcher and cgroup reader. The verdict says the limit was reached and quotes the peaks seen
// before the kill, never the container after the memory was freed.
func TestRealOOMVerdictQuotesThePeakBeforeTheKill(t *testing.T) {
	python := testkit.Python(t)
	cg := testkit.MemoryCgroup(t, 96<<20)
	c, err := memwatch.Open(memwatch.Options{Path: strings.TrimPrefix(cg.Dir, testkit.V1Root+"/memory")})
	if err != nil {
		t.Fatal(err)
	}
	if c.Dir() != cg.Dir {
		t.Fatalf("opened %s, want %s", c.Dir(), cg.Dir)
	}
	// A master as Gunicorn's is: it makes the worker's heartbeat file (wgunicorn-*, unlinked)
	// before the fork and keeps it, which is how the watcher recognises a master.
	cmd := exec.Command(python, "-c", `import os, sys, tempfile, time
sys.stdin.readline()
fd, name = tempfile.mkstemp(prefix="wgunicorn-")
os.unlink(name)
pid = os.fork()
if pid == 0:
    x = []
    while True:
        x.append(bytearray(2 << 20))
        time.sleep(0.05)
os.waitpid(pid, 0)
sys.stdin.readline()`)
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := cg.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	base := c.Sample()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var stats []memwatch.Stats
	sampled := make(chan struct{})
	go func() { // the cgroup at 10 Hz, as gwrap samples it (faster, to keep the test short)
		defer close(sampled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			st := c.Sample()
			mu.Lock()
			stats = append(stats, st)
			mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	w := probes.NewWatcher(probes.NewFS("/proc"), probes.Options{Interval: 100 * time.Millisecond, FastInterval: 50 * time.Millisecond})
	events := make(chan probes.Event, 64)
	watched := make(chan error, 1)
	go func() { watched <- w.Run(ctx, cmd.Process.Pid, func(e probes.Event) { events <- e }) }()
	stdin.Write([]byte("go\n"))

	var vanish probes.Event
	var timeline []probes.Sample // the worker's samples, as the engine's record keeps them
	deadline := time.After(20 * time.Second)
	for vanish.Kind != probes.EventVanish {
		select {
		case vanish = <-events:
			if vanish.Kind == probes.EventSample {
				timeline = append(timeline, vanish.Sample)
			}
		case <-deadline:
			t.Fatal("the worker did not die")
		}
	}
	after := c.Sample() // the container once the victim's memory is freed
	cancel()
	<-sampled
	<-watched
	mu.Lock()
	defer mu.Unlock()
	stats = append(stats, after)
	if !after.OOMKill.Known || after.OOMKill.V <= base.OOMKill.V {
		t.Fatalf("no OOM kill: oom_kill %+v → %+v", base.OOMKill, after.OOMKill)
	}
	e := Evidence{Incident: Incident{Kind: KindOOMKill, PID: vanish.ID.PID, StartTime: vanish.ID.StartTime, At: vanish.Time,
		OOMKillDelta: after.OOMKill.V - base.OOMKill.V, Vanished: true}, Settings: gunicorn.Defaults(),
		Timeline: timeline, Container: stats}
	f := measure(e)
	v := Classify(e, DefaultThresholds())
	t.Logf("%d worker samples, %d cgroup samples; after the kill: working set %s\n%s", len(e.Timeline), len(stats), mib(after.WorkingSet.V), v.Summary)
	if v.Cause != CauseOOMKilled || !v.NearMemoryLimit || !strings.Contains(v.Summary, "reached its 96.0 MiB memory limit (the cgroup's recorded peak") {
		t.Errorf("%s: %s", v.Cause, v.Summary)
	}
	if !f.PeakKnown || f.RecordedPeak < 90<<20 || !f.RSSKnown || f.PeakRSS < 50<<20 || !f.WSKnown || f.WSPeak < 50<<20 {
		t.Errorf("peaks: recorded %s, worker %s, working set %s", mib(f.RecordedPeak), mib(f.PeakRSS), mib(f.WSPeak))
	}
	if after.WorkingSet.V >= f.WSPeak/2 {
		t.Fatalf("the container after the kill (%s) is not below the peak before it (%s): nothing to tell apart", mib(after.WorkingSet.V), mib(f.WSPeak))
	}
	// " 0.2 MiB", not the tail of "100.2 MiB".
	if all := strings.NewReplacer("(", " ", ":", " ").Replace(v.Summary + fmtFacts(v.Evidence)); strings.Contains(all, " "+mib(after.WorkingSet.V)) {
		t.Errorf("quotes the working set after the kill, %s:\n%s%s", mib(after.WorkingSet.V), v.Summary, fmtFacts(v.Evidence))
	}
}
