package memwatch

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// copyTree copies a fixture tree into a temp dir so the test can change files.
func copyTree(t *testing.T, tree string) string {
	t.Helper()
	dst := t.TempDir()
	if out, err := exec.Command("cp", "-a", filepath.Join("testdata", tree)+"/.", dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return dst
}

// TestWatchOOMv2Inotify: on v2 the watcher wakes on inotify when memory.events changes and emits
// the counter's delta (this host has no v2 memory controller, so a fixture file stands in).
func TestWatchOOMv2Inotify(t *testing.T) {
	root := copyTree(t, "v2-namespace")
	c, err := Open(Options{CgroupRoot: filepath.Join(root, "sys"), ProcRoot: filepath.Join(root, "proc")})
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan OOMEvent, 4)
	ready := make(chan struct{})
	c.watching = func() { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var warned []string
	go func() {
		c.WatchOOM(ctx, func(e OOMEvent) { events <- e }, func(m string) { warned = append(warned, m) })
		close(done)
	}()
	// memory.events said oom_kill 3; two more kills.
	<-ready // the watcher has read the starting value and watches the file
	ev := filepath.Join(c.Dir(), "memory.events")
	b, _ := os.ReadFile(ev)
	start := time.Now()
	if err := os.WriteFile(ev, []byte(strings.Replace(string(b), "oom_kill 3", "oom_kill 5", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-events:
		if e.Count != 2 || e.Total != 5 {
			t.Errorf("event %+v, want count 2 total 5", e)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("inotify wake took %v", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no event")
	}
	cancel()
	<-done
	if len(warned) != 0 {
		t.Errorf("inotify unavailable: %v", warned)
	}
}

// TestWatchOOMPollsWhenNotificationsFail: a v1 cgroup whose event_control cannot be written (a
// fixture tree) degrades to polling, says so once, and still reports the kill.
func TestWatchOOMPollsWhenNotificationsFail(t *testing.T) {
	root := copyTree(t, "v1-docker")
	c, err := Open(Options{CgroupRoot: filepath.Join(root, "sys"), ProcRoot: filepath.Join(root, "proc")})
	if err != nil {
		t.Fatal(err)
	}
	// Registering the eventfd writes to cgroup.event_control: make that impossible.
	if err := os.Mkdir(filepath.Join(c.Dir(), "cgroup.event_control"), 0o755); err != nil {
		t.Fatal(err)
	}
	events := make(chan OOMEvent, 4)
	warned := make(chan string, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.WatchOOM(ctx, func(e OOMEvent) { events <- e }, func(m string) { warned <- m }); close(done) }()
	select {
	case m := <-warned:
		if !strings.Contains(m, "polled") {
			t.Errorf("warning %q", m)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no warning about the missing notifications")
	}
	oc := filepath.Join(c.Dir(), "memory.oom_control")
	if err := os.WriteFile(oc, []byte("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-events:
		if e.Count != 1 {
			t.Errorf("event %+v", e)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the poll did not see the kill")
	}
	cancel()
	<-done
}
