package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// scenario is one end-to-end run: Debian's gunicorn under gwrap, one request that misbehaves,
// and the verdict gwrap must reach.
type scenario struct {
	app      string                                    // app.py source (default testApp)
	args     []string                                  // extra gunicorn arguments
	timeout  int                                       // --timeout seconds
	path     string                                    // the request that misbehaves ("" = none: the boot itself does)
	wrap     func(t *testing.T, cmd []string) []string // e.g. run inside a cgroup
	gwrapEnv []string
}

// runScenario runs sc and returns the first postmortem event and the report it names.
func runScenario(t *testing.T, sc scenario) (map[string]any, map[string]any) {
	t.Helper()
	gunicorn := testkit.Gunicorn(t)
	app := sc.app
	if app == "" {
		app = testApp
	}
	dir := writeApp(t, app)
	port := freePort(t)
	reports := t.TempDir()
	argv := append([]string{gwrapBin, "--report-dir", reports, "--", gunicorn, "--chdir", dir, "app:app",
		"--workers", "1", "--timeout", fmt.Sprint(sc.timeout), "--graceful-timeout", "2",
		"--bind", fmt.Sprintf("127.0.0.1:%d", port)}, sc.args...)
	if sc.wrap != nil {
		argv = sc.wrap(t, argv)
	}
	p := startCmd(t, exec.Command(argv[0], argv[1:]...), sc.gwrapEnv)
	if sc.path != "" {
		waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 20*time.Second)
		go get(fmt.Sprintf("http://127.0.0.1:%d%s", port, sc.path), time.Duration(sc.timeout+20)*time.Second)
	}
	pm := p.stdout.waitEvent(t, time.Duration(sc.timeout+40)*time.Second, "a postmortem event", isEvent("postmortem"))
	p.signal(t, syscall.SIGTERM)
	p.wait(t, 20*time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gwrap's output:\n%s", strings.Join(p.stdout.snapshot(), "\n"))
		}
	})

	path, _ := pm["report"].(string)
	if path == "" {
		t.Fatalf("postmortem event names no report: %v", pm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	var rep map[string]any
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report %s is not JSON: %v", path, err)
	}
	if rep["schema"] != "gwrap.postmortem/v1" {
		t.Errorf("report schema %v", rep["schema"])
	}
	html := strings.TrimSuffix(path, ".json") + ".html"
	if _, err := os.Stat(html); err != nil {
		t.Errorf("no HTML report beside %s: %v", path, err)
	}
	t.Logf("postmortem: %v", pm)
	return pm, rep
}

func field(m map[string]any, path ...string) any {
	var v any = m
	for _, k := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

func wantCause(t *testing.T, pm, rep map[string]any, cause string) {
	t.Helper()
	if pm["cause"] != cause {
		t.Errorf("postmortem cause %v, want %s: %v", pm["cause"], cause, pm["summary"])
	}
	if got := field(rep, "verdict", "cause"); got != cause {
		t.Errorf("report verdict.cause %v, want %s", got, cause)
	}
	for _, k := range []string{"near_memory_limit", "ran_long"} {
		if _, ok := field(rep, "verdict", k).(bool); !ok {
			t.Errorf("report verdict.%s missing", k)
		}
	}
	if s, _ := field(rep, "verdict", "summary").(string); s == "" {
		t.Error("report has no summary")
	}
}

func TestVerdictBlockedSleep(t *testing.T) {
	pm, rep := runScenario(t, scenario{timeout: 4, path: "/sleep?60"})
	wantCause(t, pm, rep, "blocked")
	if pm["ran_long"] != true {
		t.Errorf("a request past the timeout ran long: %v", pm)
	}
	if field(rep, "incident", "kind") != "timeout" {
		t.Errorf("incident.kind %v, want timeout", field(rep, "incident", "kind"))
	}
}

func TestVerdictCPUBound(t *testing.T) {
	pm, rep := runScenario(t, scenario{timeout: 4, path: "/spin?60"})
	wantCause(t, pm, rep, "cpu_bound")
}

func TestVerdictBlockedOnTCPPeer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Accept and never answer.
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	pm, rep := runScenario(t, scenario{timeout: 4, path: "/connect?" + l.Addr().String()})
	wantCause(t, pm, rep, "blocked")
	b, _ := json.Marshal(rep)
	if !strings.Contains(pm["summary"].(string)+string(b), l.Addr().String()) {
		t.Errorf("the report does not name the peer %s", l.Addr())
	}
}

// TestVerdictBlockedOnChildAndUDPPeer: a worker that waits past the timeout for its child
// `sleep 40`, holding a UDP socket connected to a peer, is reported blocked on that child, and the
// evidence names the child's command line and the UDP peer.
func TestVerdictBlockedOnChildAndUDPPeer(t *testing.T) {
	peer, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	udp := "udp " + peer.LocalAddr().String()
	pm, rep := runScenario(t, scenario{timeout: 4, path: "/child?cmd=sleep+40&udp=" + peer.LocalAddr().String()})
	wantCause(t, pm, rep, "blocked")
	waiting, _ := field(rep, "deep", "waiting_on").([]any)
	var got []string
	for _, w := range waiting {
		s, _ := w.(string)
		got = append(got, s)
	}
	if len(got) < 2 || got[0] != "child sleep 40" || !slices.Contains(got, udp) {
		t.Errorf("report deep.waiting_on %q, want child sleep 40 first and %q", got, udp)
	}
	if s, _ := pm["summary"].(string); !strings.Contains(s, "waiting on its child process `sleep 40`") {
		t.Errorf("the summary does not name the child: %q", s)
	}
	t.Logf("waiting_on %q", got)
}

// TestProcFSRedactsChildArguments: the command line of a worker's child is app text: gwrap's
// deep samples quote it redacted, as the rest of the app's text.
func TestProcFSRedactsChildArguments(t *testing.T) {
	cmd := exec.Command(testkit.Python(t), "-c", "import time; time.sleep(30)", "--password=hunter2")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	want := `child ` + testkit.Python(t) + ` -c "import time; time.sleep(30)" --password=[REDACTED]`
	var wo []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		d, err := procFS("/proc").Deep(os.Getpid(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if wo = d.WaitingOn(); slices.Contains(wo, want) {
			return
		}
	}
	t.Errorf("waiting on %q, want %q", wo, want)
}

func TestVerdictCrashed(t *testing.T) {
	pm, rep := runScenario(t, scenario{timeout: 30, path: "/segv"})
	wantCause(t, pm, rep, "crashed")
}

func TestVerdictBootTimeout(t *testing.T) {
	slow := "import time\ntime.sleep(60)\n" + testApp
	pm, rep := runScenario(t, scenario{app: slow, timeout: 3})
	wantCause(t, pm, rep, "boot_timeout")
}

func TestVerdictOOMKilled(t *testing.T) {
	cg := testkit.MemoryCgroup(t, 200<<20)
	pm, rep := runScenario(t, scenario{timeout: 30, path: "/alloc?1000", wrap: cg.Wrap})
	wantCause(t, pm, rep, "oom_killed")
	if pm["near_memory_limit"] != true {
		t.Errorf("an OOM-killed worker reached the limit: %v", pm)
	}
	if field(rep, "incident", "kind") != "oom_kill" {
		t.Errorf("incident.kind %v, want oom_kill", field(rep, "incident", "kind"))
	}
	wantRequest(t, pm, rep, "GET", "/alloc", 0) // the request that allocated
}

func TestVerdictMemoryPressure(t *testing.T) {
	// /pressure allocates until the cgroup's usage is 93 % of its limit (whatever gwrap and the
	// master use), then waits past the timeout.
	cg := testkit.MemoryCgroup(t, 300<<20)
	pm, rep := runScenario(t, scenario{timeout: 4, path: "/pressure", wrap: cg.Wrap})
	wantCause(t, pm, rep, "memory_pressure")
	if pm["near_memory_limit"] != true {
		t.Errorf("near_memory_limit false: %v", pm)
	}
}

func TestVerdictCPUStarved(t *testing.T) {
	cg := testkit.CPUCgroup(t, 0.05)
	pm, rep := runScenario(t, scenario{timeout: 4, path: "/spin?60", wrap: cg.Wrap})
	wantCause(t, pm, rep, "cpu_starved")
}

// TestReportReadBack: gwrap report list/latest/show read what a run wrote.
func TestReportReadBack(t *testing.T) {
	pm, _ := runScenario(t, scenario{timeout: 30, path: "/segv"})
	dir := filepath.Dir(pm["report"].(string))
	out, err := exec.Command(gwrapBin, "report", "latest", "--report-dir", dir, "--json").Output()
	if err != nil {
		t.Fatalf("report latest: %v", err)
	}
	var rep map[string]any
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("report latest --json: %v\n%s", err, out)
	}
	if field(rep, "verdict", "cause") != "crashed" {
		t.Errorf("latest report cause %v", field(rep, "verdict", "cause"))
	}
	list, err := exec.Command(gwrapBin, "report", "list", "--report-dir", dir).Output()
	if err != nil || !strings.Contains(string(list), "crashed") {
		t.Errorf("report list: %v\n%s", err, list)
	}
	id, _ := pm["id"].(string)
	show, err := exec.Command(gwrapBin, "report", "show", id, "--report-dir", dir).Output()
	if err != nil || !strings.Contains(string(show), "crashed") {
		t.Errorf("report show %s: %v\n%s", id, err, show)
	}
}

// TestVerdictBootFailure: a worker that cannot import the app makes Gunicorn exit 3; gwrap says
// so live (a boot_failure post-mortem naming the exception, gunicorn.exit with the code) and
// exits with Gunicorn's code.
func TestVerdictBootFailure(t *testing.T) {
	gunicorn := testkit.Gunicorn(t)
	dir := writeApp(t, "import nosuchmodule_for_gwrap\n")
	reports := t.TempDir()
	p := startCmd(t, exec.Command(gwrapBin, "--report-dir", reports, "--", gunicorn, "--chdir", dir, "app:app",
		"--workers", "1", "--bind", fmt.Sprintf("127.0.0.1:%d", freePort(t))), nil)
	if code := p.wait(t, 30*time.Second); code != 3 {
		t.Errorf("gwrap exited %d, want Gunicorn's 3", code)
	}
	var pm, exit map[string]any
	for _, e := range p.stdout.events(t) {
		switch e["event"] {
		case "postmortem":
			if pm != nil {
				t.Errorf("a second post-mortem: %v", e)
			}
			pm = e
		case "gunicorn.exit":
			exit = e
		}
	}
	if pm == nil || pm["kind"] != "boot_failure" || !strings.Contains(fmt.Sprint(pm["summary"]), "ModuleNotFoundError") {
		t.Errorf("post-mortem %v", pm)
	}
	if exit == nil || exit["exit_code"] != float64(3) {
		t.Errorf("gunicorn.exit %v", exit)
	}
}

// TestPythonStackInLateAndReport: a sync worker sleeping in a request is named by its frame in
// worker.late (stack_top) and the post-mortem carries its whole Python stack, taken before
// Gunicorn killed it.
func TestPythonStackInLateAndReport(t *testing.T) {
	pm, rep := runScenario(t, scenario{timeout: 4, path: "/sleep?30", app: testkit.AppShim()})
	wantCause(t, pm, rep, "blocked")
	inc, _ := rep["incident"].(map[string]any)
	stack, _ := inc["python_stack"].([]any)
	top, _ := inc["stack_top"].(string)
	if len(stack) == 0 || !strings.Contains(top, "misbehave.py:") || !strings.Contains(top, "in blocking_sleep") {
		t.Errorf("python_stack %v, stack_top %q", stack, top)
	}
	if !strings.Contains(fmt.Sprint(pm["summary"]), top) {
		t.Errorf("the summary does not name the frame %q: %v", top, pm["summary"])
	}
}
