package probes

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// gunicornWorkers runs Debian's gunicorn with n sync workers and the shared test app, plus extra flags, and
// returns the master's pid and port once every worker is a child of the master and it answers.
func gunicornWorkers(tb testing.TB, n int, extra ...string) (int, int) {
	tb.Helper()
	bin := testkit.Gunicorn(tb)
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "app.py"), []byte(testkit.AppShim()), 0o644); err != nil {
		tb.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	args := append([]string{"--chdir", dir, "app:app", "-w", fmt.Sprint(n), "--bind", fmt.Sprintf("127.0.0.1:%d", port)}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	fs := NewFS("/proc")
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		kids, _ := fs.Children(cmd.Process.Pid)
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			if len(kids) == n {
				return cmd.Process.Pid, port
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatal("gunicorn did not come up")
	return 0, 0
}

// TestLiveListenQueueRises saturates 2 sync workers with slow requests: both become busy and
// the connections no worker can take wait in the master's accept queue, whose bound is the
// --backlog given (below every somaxconn default, so not capped).
func TestLiveListenQueueRises(t *testing.T) {
	master, port := gunicornWorkers(t, 2, "--backlog", "64", "--timeout", "60")
	fs := NewFS("/proc")
	// Idle once the workers have booted and taken gunicornWorkers' own probe connection.
	var idle Saturation
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if idle, err = fs.Saturation(master, time.Now()); err != nil {
			t.Fatal(err)
		}
		if len(idle.Listeners) == 1 && idle.Listeners[0].Queue == 0 && idle.Busy == 0 {
			break
		}
	}
	if len(idle.Listeners) != 1 || idle.Listeners[0].Addr != fmt.Sprintf("127.0.0.1:%d", port) || idle.Listeners[0].Queue != 0 ||
		idle.Workers != 2 || !idle.BusyKnown || idle.Busy != 0 {
		t.Fatalf("idle: %+v", idle)
	}
	if idle.HeartbeatAgeMax < 0 || idle.HeartbeatAgeMax > 60*time.Second {
		t.Errorf("heartbeat age max %v", idle.HeartbeatAgeMax)
	}
	if l := idle.Listeners[0]; !l.MaxKnown || l.Max != 64 {
		t.Errorf("backlog bound %+v, want 64 from --backlog", l)
	}
	const clients = 6
	for range clients {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte("GET /sleep?30 HTTP/1.0\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	var s Saturation
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s, err = fs.Saturation(master, time.Now()); err != nil {
			t.Fatal(err)
		}
		if s.Busy == 2 && len(s.Listeners) == 1 && s.Listeners[0].Queue == clients-2 && s.Saturated() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("saturated: %+v, want 2 busy and %d queued", s, clients-2)
}

// BenchmarkSaturation measures one Saturation read against real Gunicorn with 8 idle workers.
func BenchmarkSaturation(b *testing.B) {
	master, _ := gunicornWorkers(b, 8)
	fs := NewFS("/proc")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fs.Saturation(master, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}
