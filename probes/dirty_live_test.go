package probes

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// startDirty runs the newest Gunicorn release (25+) with one sync HTTP worker and two dirty
// workers serving testkit's dirty app, and returns the master pid and the base URL.
func startDirty(t *testing.T, timeout, dirtyTimeout int) (int, string) {
	t.Helper()
	var rel testkit.Release
	for _, r := range testkit.Releases(t) {
		if r.Major() >= 25 {
			rel = r
		}
	}
	if rel.Version == "" {
		testkit.Unavailable(t, "no Gunicorn 25+ unpacked (run scripts/deps.sh)")
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	argv := rel.Argv(t, "wsgi:app", "-w", "1", "--timeout", fmt.Sprint(timeout), "--bind", fmt.Sprintf("127.0.0.1:%d", port),
		"--dirty-app", "dirty:Heavy", "--dirty-workers", "2", "--dirty-timeout", fmt.Sprint(dirtyTimeout))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = rel.Env(t)
	cmd.Dir = t.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get(base + "/pid"); err == nil {
			r.Body.Close()
			return cmd.Process.Pid, base
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("gunicorn did not answer")
	return 0, ""
}

// TestLiveDirtyPool runs a real Gunicorn with dirty workers under the watcher: the dirty arbiter is
// found and never taken for an HTTP worker, the dirty workers are sampled with their own heartbeat
// judged against --dirty-timeout, an HTTP worker late while it waits on the arbiter's socket
// carries what the dirty workers were doing, a followed dirty worker's stack is taken every sweep,
// and a dirty worker stuck in C holding the GIL is late, then gone.
func TestLiveDirtyPool(t *testing.T) {
	testkit.RequireRoot(t)
	master, base := startDirty(t, 4, 4)
	w := NewWatcher(NewFS("/proc"), Options{Interval: 200 * time.Millisecond, FastInterval: 50 * time.Millisecond,
		Limits: Limits{Timeout: 4 * time.Second, Beat: 2 * time.Second, Dirty: true, DirtyTimeout: 4 * time.Second}})
	events := make(chan Event, 4096)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, master, func(e Event) { events <- e }) }()
	t.Cleanup(func() { cancel(); <-done })

	var arbiter Event
	httpW, dirty := map[int]bool{}, map[int]bool{}
	ages := map[int]bool{}
	deadline := time.After(10 * time.Second)
	for arbiter.ID.PID == 0 || len(dirty) < 2 || len(httpW) < 1 || len(ages) < 2 {
		select {
		case e := <-events:
			switch {
			case e.Kind == EventArbiter:
				arbiter = e
			case e.Kind == EventBoot && e.Role == RoleDirty:
				dirty[e.ID.PID] = true
			case e.Kind == EventBoot:
				httpW[e.ID.PID] = true
			case e.Kind == EventSample && e.Role == RoleDirty && e.Sample.HeartbeatAge >= 0 && e.Timeout == 4*time.Second:
				ages[e.ID.PID] = true
			}
		case <-deadline:
			t.Fatalf("arbiter %+v, HTTP workers %v, dirty workers %v, with a heartbeat age %v", arbiter, httpW, dirty, ages)
		}
	}
	if httpW[arbiter.ID.PID] || len(httpW) != 1 {
		t.Fatalf("the dirty arbiter %d was taken for an HTTP worker (%v)", arbiter.ID.PID, httpW)
	}
	if len(arbiter.DirtySockets) != 1 || !strings.HasSuffix(arbiter.DirtySockets[0], "/arbiter.sock") {
		t.Errorf("arbiter sockets %q", arbiter.DirtySockets)
	}
	var first int
	for pid := range dirty {
		first = pid
	}
	w.Follow(first, true)

	// The HTTP worker waits on a dirty worker past half its timeout.
	go fetchBody(base + "/dirty/sleep?3")
	late := waitEvent(t, events, 8*time.Second, func(e Event) bool { return e.Kind == EventLate && e.Role == RoleHTTP })
	if !waitsOn(late.Deep.WaitingOn(), arbiter.DirtySockets) || len(late.Dirty) != 2 {
		t.Errorf("late HTTP worker: waiting on %v, %d dirty workers' calls", late.Deep.WaitingOn(), len(late.Dirty))
	}
	waitEvent(t, events, 3*time.Second, func(e Event) bool { return e.Kind == EventStack && e.ID.PID == first && e.Deep != nil })
	w.Follow(first, false)

	// A dirty worker stuck in C is late against --dirty-timeout, then killed by the arbiter.
	go fetchBody(base + "/dirty-bg/cloop")
	dl := waitEvent(t, events, 8*time.Second, func(e Event) bool { return e.Kind == EventLate && e.Role == RoleDirty })
	if dl.Timeout != 4*time.Second || dl.Sample.CPUPercent() < 50 {
		t.Errorf("late dirty worker: timeout %v, %.0f%% CPU", dl.Timeout, dl.Sample.CPUPercent())
	}
	waitEvent(t, events, 10*time.Second, func(e Event) bool { return e.Kind == EventVanish && e.ID == dl.ID && e.Role == RoleDirty })
}

func fetchBody(url string) {
	c := http.Client{Timeout: 30 * time.Second}
	if r, err := c.Get(url); err == nil {
		r.Body.Close()
	}
}
