package gunicorn

import (
	"bufio"
	"bytes"
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

// TestLiveReleaseKills runs every real Gunicorn release on the machine (Debian's 20.1 and those
// scripts/deps.sh unpacks: 23.0, 26.x) with a sync worker in a memory cgroup, through the three
// kills users misread: a request sleeping past the timeout, a C loop that ignores the SIGABRT
// until Gunicorn SIGKILLs it (21+: "Perhaps out of memory?"), and a real OOM kill. Explain must
// tell them apart from the plain log. -capture writes each log as
// testdata/logs/gunicorn-<version>-captured-kills.log (then -run Golden -update writes the golden).
func TestLiveReleaseKills(t *testing.T) {
	testkit.RequireRoot(t)
	for _, rel := range testkit.Releases(t) {
		t.Run(rel.Version, func(t *testing.T) { liveReleaseKills(t, rel) })
	}
}

func liveReleaseKills(t *testing.T, rel testkit.Release) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	argv := rel.Argv(t, "--timeout", "3", "-w", "1", "-b", addr, "wsgi:app")
	cg := testkit.MemoryCgroup(t, 300<<20)
	argv = cg.Wrap(t, argv)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = t.TempDir()
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "TZ=UTC"}, rel.Env(t)...)
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
	g := &liveGunicorn{t: t, addr: addr, lines: make(chan string, 256)}
	go func() {
		defer close(g.lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			g.lines <- sc.Text()
		}
	}()
	pidOf := func(line string) int { return ParseLine([]byte(line)).PID }
	worker := pidOf(g.waitFor("Booting worker", 20*time.Second))
	waitAnswer(t, addr)

	// 1. A request sleeping past the timeout: the sync worker handles SIGABRT and exits.
	slept := worker
	g.get("/sleep?60")
	g.waitFor(fmt.Sprintf("WORKER TIMEOUT (pid:%d)", slept), 15*time.Second)
	worker = pidOf(g.waitFor("Booting worker", 15*time.Second))
	waitAnswer(t, addr)

	// 2. A C loop holding the GIL: the SIGABRT handler never runs, Gunicorn SIGKILLs it.
	looped := worker
	g.get("/cloop")
	g.waitFor(fmt.Sprintf("WORKER TIMEOUT (pid:%d)", looped), 15*time.Second)
	worker = pidOf(g.waitFor("Booting worker", 15*time.Second))
	waitAnswer(t, addr)

	// 3. An allocation past the cgroup's limit: the kernel's OOM killer SIGKILLs the worker.
	oomed := worker
	g.get("/alloc?2000")
	g.waitFor("Booting worker", 15*time.Second)
	waitAnswer(t, addr)
	if n := oomKills(t, cg.Dir); n != 1 {
		t.Errorf("the cgroup counted %d OOM kills, want 1: the fixture's SIGKILL must be a real OOM kill", n)
	}

	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	g.waitFor("Shutting down: Master", 15*time.Second)

	ex, err := Explain(bytes.NewReader(g.log.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	type inc struct {
		pid                     int
		kind, signal            string
		escalation, possibleOOM bool
	}
	want := []inc{
		{slept, "timeout", "", false, false},
		{looped, "timeout", "SIGKILL", true, false},
		{oomed, "signal", "SIGKILL", false, true},
	}
	var got []inc
	for _, i := range ex.Incidents {
		got = append(got, inc{i.PID, i.Kind, i.Signal, i.TimeoutEscalation, i.PossibleOOM})
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Gunicorn %s: incidents %+v\nwant %+v\nlog:\n%s", rel.Version, got, want, g.log.String())
	}
	if ex.Version != rel.Version {
		t.Errorf("version %q, want %q", ex.Version, rel.Version)
	}
	if *capture {
		name := filepath.Join("testdata", "logs", "gunicorn-"+rel.Version+"-captured-kills.log")
		if err := os.WriteFile(name, g.log.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// oomKills reads oom_kill from a v1 memory cgroup's memory.oom_control.
func oomKills(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		var n int
		if _, err := fmt.Sscanf(line, "oom_kill %d", &n); err == nil {
			return n
		}
	}
	t.Fatalf("no oom_kill in %s/memory.oom_control", dir)
	return 0
}

// waitAnswer waits until the (new) worker answers, so the next request reaches it.
func waitAnswer(t *testing.T, addr string) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := c.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no worker answered within 20s")
}
