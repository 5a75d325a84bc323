package gunicorn

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

var capture = flag.Bool("capture", false, "write the live Gunicorn run's log to testdata/logs (review before committing)")

// liveGunicorn is one running Gunicorn master whose stderr lines arrive on a channel.
type liveGunicorn struct {
	t     *testing.T
	pid   int // the master
	addr  string
	lines chan string
	log   bytes.Buffer
}

func startGunicorn(t *testing.T) *liveGunicorn {
	bin := testkit.Gunicorn(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "app.py"), []byte(testkit.AppShim()), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "--timeout", "3", "-w", "2", "-b", addr, "app:app")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "TZ=UTC"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	g := &liveGunicorn{t: t, pid: cmd.Process.Pid, addr: addr, lines: make(chan string, 256)}
	go func() {
		defer close(g.lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			g.lines <- sc.Text()
		}
	}()
	return g
}

// waitFor collects lines until one contains want, within d.
func (g *liveGunicorn) waitFor(want string, d time.Duration) string {
	g.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case l, ok := <-g.lines:
			if !ok {
				g.t.Fatalf("gunicorn ended before %q; log:\n%s", want, g.log.String())
			}
			g.log.WriteString(l + "\n")
			if strings.Contains(l, want) {
				return l
			}
		case <-deadline:
			g.t.Fatalf("no %q within %v; log:\n%s", want, d, g.log.String())
		}
	}
}

// get sends a request whose connection the dying worker drops; only its start matters.
func (g *liveGunicorn) get(path string) {
	c := &http.Client{Timeout: 10 * time.Second}
	go func() {
		if resp, err := c.Get("http://" + g.addr + path); err == nil {
			resp.Body.Close()
		}
	}()
}

// TestLiveGunicornLog runs Debian's Gunicorn (20.1) through every kill gwrap explains and checks
// the parser and Explain on its real output. -capture writes the log as a fixture.
func TestLiveGunicornLog(t *testing.T) {
	g := startGunicorn(t)
	g.waitFor("Booting worker", 10*time.Second)
	g.waitFor("Booting worker", 10*time.Second)

	g.get("/sleep")
	timeout := ParseLine([]byte(g.waitFor("WORKER TIMEOUT", 10*time.Second)))
	if timeout.Kind != KindTimeout || timeout.WorkerPID == 0 || timeout.PID == 0 || timeout.Level != "CRITICAL" {
		t.Fatalf("WORKER TIMEOUT parsed as %+v", timeout)
	}
	g.waitFor(fmt.Sprintf("Worker exiting (pid: %d)", timeout.WorkerPID), 5*time.Second)
	g.waitFor("Booting worker", 5*time.Second)

	g.get("/kill")
	killed := ParseLine([]byte(g.waitFor("was terminated due to signal 9", 10*time.Second)))
	if killed.Kind != KindSignaled || killed.SignalName != "SIGKILL" || killed.WorkerPID == 0 {
		t.Fatalf("SIGKILL parsed as %+v", killed)
	}
	g.waitFor("Booting worker", 5*time.Second)

	g.get("/exit") // 20.1 logs no exit code: only the replacement's boot shows it
	g.waitFor("Booting worker", 10*time.Second)

	g.get("/abort")
	aborted := ParseLine([]byte(g.waitFor("was terminated due to signal 6", 10*time.Second)))
	if aborted.Kind != KindSignaled || aborted.SignalName != "SIGABRT" {
		t.Fatalf("SIGABRT parsed as %+v", aborted)
	}
	g.waitFor("Booting worker", 5*time.Second)

	if err := syscall.Kill(g.pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	g.waitFor("Shutting down: Master", 10*time.Second)

	ex, err := Explain(bytes.NewReader(g.log.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	type inc struct {
		pid                  int
		kind, signal         string
		escalation, possible bool
		handled              bool
	}
	want := []inc{
		{timeout.WorkerPID, "timeout", "", false, false, true},
		{killed.WorkerPID, "signal", "SIGKILL", false, true, false},
		{aborted.WorkerPID, "signal", "SIGABRT", false, false, false},
	}
	var got []inc
	for _, i := range ex.Incidents {
		got = append(got, inc{i.PID, i.Kind, i.Signal, i.TimeoutEscalation, i.PossibleOOM, i.HandledAbort})
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("incidents %+v\nwant %+v\nlog:\n%s", got, want, g.log.String())
	}
	if ex.Version != "20.1.0" || ex.WorkerClass != "sync" || ex.Counts["booted"] != 6 {
		t.Errorf("version %q class %q counts %v", ex.Version, ex.WorkerClass, ex.Counts)
	}
	// Every prefixed line of the real log parses with its prefix.
	for _, l := range strings.Split(strings.TrimSpace(g.log.String()), "\n") {
		if ev := ParseLine([]byte(l)); strings.HasPrefix(l, "[") && (ev.PID == 0 || ev.Time.IsZero() || ev.Kind == KindRaw) {
			t.Errorf("line not understood: %q → %+v", l, ev)
		}
	}
	if *capture {
		if err := os.WriteFile(filepath.Join("testdata", "logs", "gunicorn-20.1.0-captured.log"), g.log.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
