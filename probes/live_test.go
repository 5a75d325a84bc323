package probes

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// startGunicorn runs Debian's gunicorn with one sync worker and returns the master pid and port.
func startGunicorn(t *testing.T, timeout int) (int, int) {
	t.Helper()
	bin := testkit.Gunicorn(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "app.py"), []byte(testkit.AppShim()), 0o644); err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "--chdir", dir, "app:app", "-w", "1", "--timeout", fmt.Sprint(timeout), "--bind", fmt.Sprintf("127.0.0.1:%d", port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port)); err == nil {
			r.Body.Close()
			return cmd.Process.Pid, port
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("gunicorn did not answer")
	return 0, 0
}

// history collects the samples a Watcher emits, per worker (what the engine's records keep).
type history struct {
	mu sync.Mutex
	m  map[ID][]Sample
}

func (h *history) of(id ID) []Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Sample(nil), h.m[id]...)
}

func (h *history) all() map[ID][]Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[ID][]Sample{}
	for id, s := range h.m {
		out[id] = append([]Sample(nil), s...)
	}
	return out
}

// watch runs a Watcher on the master and returns the samples it emits and its other events.
func watch(t *testing.T, master int, timeout int) (*history, chan Event) {
	t.Helper()
	w := NewWatcher(NewFS("/proc"), Options{Interval: 200 * time.Millisecond, FastInterval: 50 * time.Millisecond,
		Limits: Limits{Timeout: time.Duration(timeout) * time.Second}}) // sync: Beat timeout/2
	events := make(chan Event, 256)
	h := &history{m: map[ID][]Sample{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx, master, func(e Event) {
			if e.Kind == EventSample {
				h.mu.Lock()
				h.m[e.ID] = append(h.m[e.ID], e.Sample)
				h.mu.Unlock()
				return
			}
			events <- e
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return h, events
}

func waitEvent(t *testing.T, events chan Event, d time.Duration, pred func(Event) bool) Event {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case e := <-events:
			if pred(e) {
				return e
			}
		case <-deadline:
			t.Fatalf("no matching event within %v", d)
		}
	}
}

func isLate(e Event) bool { return e.Kind == EventLate }

func TestLiveSleepingWorker(t *testing.T) {
	master, port := startGunicorn(t, 4)
	hist, events := watch(t, master, 4)
	waitEvent(t, events, 5*time.Second, func(e Event) bool { return e.Kind == EventBoot })
	go http.Get(fmt.Sprintf("http://127.0.0.1:%d/sleep?30", port))
	e := waitEvent(t, events, 10*time.Second, isLate)
	if e.Sample.State != "S" || e.Sample.CPUPercent() > 20 || e.Sample.HeartbeatAge < 2*time.Second {
		t.Errorf("late sample %+v", e.Sample)
	}
	if e.Deep == nil || !strings.Contains(strings.Join(e.Deep.WaitingOn(), ","), "wchan") {
		t.Errorf("deep %+v", e.Deep)
	}
	// The history shows the silence growing.
	h := hist.of(e.ID)
	var rising int
	for i := 1; i < len(h); i++ {
		if h[i].HeartbeatAge > h[i-1].HeartbeatAge {
			rising++
		}
	}
	if rising < 5 {
		t.Errorf("heartbeat age did not rise over %d samples", len(h))
	}
	waitEvent(t, events, 10*time.Second, func(ev Event) bool { return ev.Kind == EventVanish && ev.ID == e.ID })
}

func TestLiveSpinningWorker(t *testing.T) {
	master, port := startGunicorn(t, 4)
	_, events := watch(t, master, 4)
	go http.Get(fmt.Sprintf("http://127.0.0.1:%d/spin?30", port))
	e := waitEvent(t, events, 10*time.Second, isLate)
	if e.Sample.CPUPercent() < 70 || e.Sample.State != "R" {
		t.Errorf("a spinning worker: %.0f%% CPU, state %s", e.Sample.CPUPercent(), e.Sample.State)
	}
}

func TestLiveWorkerWaitingOnTCPPeer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	master, port := startGunicorn(t, 4)
	_, events := watch(t, master, 4)
	go http.Get(fmt.Sprintf("http://127.0.0.1:%d/connect?%s", port, l.Addr()))
	e := waitEvent(t, events, 10*time.Second, isLate)
	if e.Deep == nil {
		t.Fatal("no deep sample")
	}
	wo := e.Deep.WaitingOn()
	if len(wo) == 0 || wo[0] != "tcp "+l.Addr().String() {
		t.Errorf("waiting on %v, want tcp %s first", wo, l.Addr())
	}
}

// TestLiveIdleWorkerNeverLate: an idle sync worker beats only every timeout/2; watched for more
// than that, it is never called late.
func TestLiveIdleWorkerNeverLate(t *testing.T) {
	master, _ := startGunicorn(t, 4)
	hist, events := watch(t, master, 4)
	deadline := time.After(5 * time.Second)
	var maxAge time.Duration
	for {
		select {
		case e := <-events:
			if e.Kind == EventLate || e.Kind == EventStuckBoot {
				t.Fatalf("an idle worker was called %s: %+v", e.Kind, e.Sample)
			}
		case <-deadline:
			for _, samples := range hist.all() {
				for _, s := range samples {
					maxAge = max(maxAge, s.HeartbeatAge)
				}
			}
			if maxAge < 1500*time.Millisecond {
				t.Errorf("the idle worker's heartbeat age peaked at %v: the heartbeat is not being read", maxAge)
			}
			return
		}
	}
}

// TestSweepOncePerInterval: Options.Sweep is called once per interval from the start of Run,
// before a master is found (the root here is not Gunicorn) while Run looks for one more often.
func TestSweepOncePerInterval(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var mu sync.Mutex
	var calls []time.Time
	w := NewWatcher(NewFS("/proc"), Options{Interval: 100 * time.Millisecond, FastInterval: 20 * time.Millisecond,
		Sweep: func(now time.Time, sample func()) { mu.Lock(); calls = append(calls, now); mu.Unlock(); sample() }})
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if err := w.Run(ctx, cmd.Process.Pid, func(Event) {}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) < 5 {
		t.Fatalf("Sweep called %d times in 1.5 s at a 100 ms interval", len(calls))
	}
	for i := 1; i < len(calls); i++ {
		if gap := calls[i].Sub(calls[i-1]); gap < 90*time.Millisecond {
			t.Errorf("Sweep calls %d and %d %v apart: more than once per interval", i-1, i, gap)
		}
	}
}

// TestVanishStampedWhenSeen: a worker that dies while a sweep runs is stamped gone when the sweep
// saw it gone, never when the sweep began: that stamp is the latest its death can have been, and
// an OOM kill is matched against it. Here the clock kills the worker the moment the sweep takes
// its start time (and waits until the master reaped it), so the sweep that began before the death
// finds it gone; a sweep that takes long (the kernel reclaiming memory) is the same case.
func TestVanishStampedWhenSeen(t *testing.T) {
	master, _ := startGunicorn(t, 30)
	var worker atomic.Int64
	var killedAt atomic.Int64 // Unix ns
	now := func() time.Time {
		at := time.Now()
		if pid := int(worker.Swap(0)); pid != 0 {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Errorf("kill %d: %v", pid, err)
			}
			killedAt.Store(time.Now().UnixNano())
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
					break // reaped by the master
				}
			}
		}
		return at
	}
	w := NewWatcher(NewFS("/proc"), Options{Interval: 200 * time.Millisecond, FastInterval: 50 * time.Millisecond,
		Limits: Limits{Timeout: 30 * time.Second}, Now: now})
	events := make(chan Event, 256)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx, master, func(e Event) {
			if e.Kind != EventSample {
				events <- e
			}
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	boot := waitEvent(t, events, 10*time.Second, func(e Event) bool { return e.Kind == EventBoot })
	worker.Store(int64(boot.ID.PID)) // the next call of the clock kills it
	gone := waitEvent(t, events, 10*time.Second, func(e Event) bool { return e.Kind == EventVanish && e.ID == boot.ID })
	if k := time.Unix(0, killedAt.Load()); gone.Time.Before(k) {
		t.Errorf("worker %d stamped gone at %v, %v before it was killed", boot.ID.PID, gone.Time.Format("15:04:05.000"), k.Sub(gone.Time))
	}
}
