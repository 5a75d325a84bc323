package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// Stand-ins for the APM wrappers people put in front of Gunicorn (not installed here), each doing
// what the real one does to the process it runs. ddtrace-run (ddtrace/commands/ddtrace_run.py)
// and newrelic-admin run-program (newrelic/admin/run_program.py) put a bootstrap directory first
// on PYTHONPATH, whose sitecustomize.py starts the agent and then loads the next sitecustomize on
// the path, set their variables, and exec the command found on PATH. opentelemetry-instrument
// (opentelemetry/instrumentation/auto_instrumentation/__init__.py) puts its own directory and
// the working directory first on PYTHONPATH and execs the command; its sitecustomize.py
// initialises the instrumentation and loads no other sitecustomize, so gwrap's hook never runs.
var apmWrappers = map[string]string{
	"ddtrace-run": `#!/usr/bin/python3
import os, shutil, sys
boot = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddtrace_bootstrap")
pp = os.environ.get("PYTHONPATH")
os.environ["PYTHONPATH"] = boot + (os.pathsep + pp if pp else "")
os.environ.setdefault("DD_TRACE_ENABLED", "true")
exe = shutil.which(sys.argv[1])
os.execl(exe, exe, *sys.argv[2:])
`,
	"newrelic-admin": `#!/usr/bin/python3
import os, shutil, sys
if sys.argv[1] != "run-program":
    sys.exit("newrelic-admin: only run-program is stood in for")
boot = os.path.join(os.path.dirname(os.path.abspath(__file__)), "newrelic_bootstrap")
pp = os.environ.get("PYTHONPATH")
os.environ["PYTHONPATH"] = boot + (os.pathsep + pp if pp else "")
os.environ["NEW_RELIC_ADMIN_COMMAND"] = repr(sys.argv)
exe = shutil.which(sys.argv[2])
os.execl(exe, exe, *sys.argv[3:])
`,
	"opentelemetry-instrument": `#!/usr/bin/python3
import os, shutil, sys
pp = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
if os.getcwd() not in pp:
    pp.insert(0, os.getcwd())
here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "otel_auto")
pp = [p for p in pp if p != here]
pp.insert(0, here)
os.environ["PYTHONPATH"] = os.pathsep.join(pp)
exe = shutil.which(sys.argv[1])
os.execl(exe, exe, *sys.argv[2:])
`,
	// A bootstrap sitecustomize that starts "the agent", then loads the next one, as ddtrace's and
	// New Relic's do.
	"ddtrace_bootstrap/sitecustomize.py":  chainedSitecustomize,
	"newrelic_bootstrap/sitecustomize.py": chainedSitecustomize,
	"otel_auto/sitecustomize.py":          "import os\nos.environ['OTEL_INITIALIZED'] = '1'\n",
}

const chainedSitecustomize = `import os, sys
os.environ["APM_AGENT_LOADED"] = "1"
here = os.path.dirname(os.path.abspath(__file__))
path = [p for p in sys.path if os.path.abspath(p or ".") != here]
from importlib.machinery import PathFinder
from importlib.util import module_from_spec
spec = PathFinder.find_spec("sitecustomize", path)
if spec is not None and spec.loader is not None:
    mod = module_from_spec(spec)
    sys.modules["sitecustomize"] = mod
    spec.loader.exec_module(mod)
`

// writeWrappers writes the stand-ins into a directory readable by anyone and returns it.
func writeWrappers(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, src := range apmWrappers {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// launch is one way Gunicorn is started: the command gwrap runs, given Gunicorn's own command
// line (gunicorn: the program; args: its arguments) and what the test wrote.
type launch struct {
	name string
	argv func(gunicorn []string, args []string, l launchEnv) []string
	// options are the settings of a custom application (server.py), which has no command line.
	custom bool
	// releases: also on Gunicorn 23.0 and 26.x (the launchers of the field suite).
	releases bool
	// noPtrace: gwrap runs without CAP_SYS_PTRACE (as in a default Docker container), so the
	// open files of a Gunicorn running as another user are closed to it.
	noPtrace bool
	check    func(t *testing.T, l launchEnv, events []map[string]any)
}

type launchEnv struct {
	wrappers, python, work string
}

// TestLaunchers: the master is found however Gunicorn is launched — by what it holds and forks,
// not by its command line — and its settings are known: a worker stuck past a 3 s timeout is seen
// late and explained with samples, on Debian's 20.1 and, for the field suite's launchers, on
// 23.0 and 26.x. A migration before `exec gunicorn`, however Gunicorn-like its output, has no
// workers.
func TestLaunchers(t *testing.T) {
	testkit.RequireRoot(t)
	gunicornArgs := func(port int) []string {
		return []string{"--chdir", testkit.AppsDir(), "wsgi:app", "--bind", fmt.Sprintf("127.0.0.1:%d", port),
			"--timeout", "3", "--graceful-timeout", "1", "--workers", "1"}
	}
	run := "from gunicorn.app.wsgiapp import run; run()"
	launches := []launch{
		{name: "gunicorn", argv: func(g, a []string, _ launchEnv) []string { return append(g, a...) }},
		{name: "python -m gunicorn", argv: func(_, a []string, l launchEnv) []string {
			return append([]string{l.python, "-m", "gunicorn"}, a...)
		}},
		{name: "python -c run()", releases: true, argv: func(_, a []string, l launchEnv) []string {
			return append([]string{l.python, "-c", run}, a...)
		}},
		{name: "a custom application", releases: true, custom: true, argv: func(_, _ []string, l launchEnv) []string {
			return []string{l.python, filepath.Join(testkit.AppsDir(), "server.py")}
		}},
		{name: "a shell that does not exec", argv: func(g, a []string, _ launchEnv) []string {
			return append([]string{"/bin/sh", "-c", `"$@"; echo "gunicorn exited with $?"`, "sh"}, append(g, a...)...)
		}},
		{name: "a migration that talks like Gunicorn, then exec", argv: func(g, a []string, l launchEnv) []string {
			// The migration prints Gunicorn's start lines with its own pid, forks a child and
			// listens on a socket of its own; then the shell becomes Gunicorn.
			migrate := `import os, socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
child = os.fork()
if child == 0:
    time.sleep(3); os._exit(0)
open(sys.argv[1], "w").write("%d %d" % (os.getpid(), child))
for line in ("Starting gunicorn 20.1.0", "Listening at: http://127.0.0.1:1 (%d)" % os.getpid(), "Using worker: sync"):
    print("[2026-12-03 05:00:00 +0000] [%d] [INFO] %s" % (os.getpid(), line), file=sys.stderr, flush=True)
time.sleep(2)
`
			return append([]string{"/bin/sh", "-c", `"$0" -c "$1" "$2" && shift 2 && exec "$@"`, l.python, migrate,
				filepath.Join(l.work, "migration-pids")}, append(g, a...)...)
		}, check: func(t *testing.T, l launchEnv, events []map[string]any) {
			b, err := os.ReadFile(filepath.Join(l.work, "migration-pids"))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range strings.Fields(string(b)) {
				for _, e := range events {
					if e["event"] == "worker.boot" && fmt.Sprint(e["pid"]) == f {
						t.Errorf("the migration's process %s was taken for a worker", f)
					}
				}
			}
		}},
		{name: "setpriv in front", argv: func(g, a []string, _ launchEnv) []string {
			return append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}, append(g, a...)...)
		}},
		{name: "setpriv in front, gwrap without CAP_SYS_PTRACE", noPtrace: true, argv: func(g, a []string, _ launchEnv) []string {
			return append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}, append(g, a...)...)
		}, check: func(t *testing.T, _ launchEnv, events []map[string]any) {
			for _, e := range events {
				if e["event"] == "config.warning" && e["code"] == "master_unconfirmed" {
					return
				}
			}
			t.Error("no warning that the master was taken on its command line alone")
		}},
		{name: "ddtrace-run", argv: func(g, a []string, l launchEnv) []string {
			return append([]string{filepath.Join(l.wrappers, "ddtrace-run")}, append(g, a...)...)
		}},
		{name: "newrelic-admin run-program", argv: func(g, a []string, l launchEnv) []string {
			return append([]string{filepath.Join(l.wrappers, "newrelic-admin"), "run-program"}, append(g, a...)...)
		}},
		{name: "opentelemetry-instrument", argv: func(g, a []string, l launchEnv) []string {
			return append([]string{filepath.Join(l.wrappers, "opentelemetry-instrument")}, append(g, a...)...)
		}},
	}
	rels := testkit.Releases(t)
	wrappers := writeWrappers(t)
	// Four gwraps at a time: each mostly waits (a sleeping request, a 3 s timeout).
	sem := make(chan struct{}, 4)
	t.Run("group", func(t *testing.T) {
		for _, rel := range rels {
			for _, ln := range launches {
				if rel.Major() != 20 && !ln.releases {
					continue
				}
				t.Run(rel.Version+"/"+ln.name, func(t *testing.T) {
					t.Parallel()
					sem <- struct{}{}
					defer func() { <-sem }()
					work := t.TempDir()
					// Reachable by Gunicorn running as another user (setpriv): it stats its cwd.
					for _, d := range []string{filepath.Dir(work), work} {
						if err := os.Chmod(d, 0o755); err != nil {
							t.Fatal(err)
						}
					}
					runLaunch(t, rel, ln, launchEnv{wrappers: wrappers, python: testkit.Python(t), work: work}, gunicornArgs)
				})
			}
		}
	})
}

func runLaunch(t *testing.T, rel testkit.Release, ln launch, l launchEnv, gargs func(int) []string) {
	port := freePort(t)
	reports := t.TempDir()
	g := []string{testkit.Gunicorn(t)}
	if rel.Major() != 20 {
		g = []string{l.python, "-m", "gunicorn"}
	}
	env := rel.Env(t)
	if ln.custom {
		env = append(env, fmt.Sprintf(`SERVER_OPTIONS={"bind": "127.0.0.1:%d", "timeout": 3, "graceful_timeout": 1, "workers": 1}`, port))
	}
	argv := append([]string{gwrapBin, "--report-dir", reports, "--"}, ln.argv(g, gargs(port), l)...)
	if ln.noPtrace {
		argv = append([]string{"setpriv", "--bounding-set", "-sys_ptrace", "--inh-caps", "-sys_ptrace"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = l.work
	p := startCmd(t, cmd, env)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gwrap's output:\n%s", strings.Join(p.stdout.snapshot(), "\n"))
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitHTTP(t, base+"/", 30*time.Second)
	go get(base+"/sleep?30", 20*time.Second)
	pm := p.stdout.waitEvent(t, 30*time.Second, "a postmortem event", isEvent("postmortem"))
	p.signal(t, syscall.SIGTERM)
	p.wait(t, 20*time.Second)
	events := p.stdout.events(t)

	if pm["cause"] != "blocked" {
		t.Errorf("postmortem cause %v, want blocked: %v", pm["cause"], pm["summary"])
	}
	late := false
	for _, e := range events {
		if e["event"] == "worker.late" && e["pid"] == pm["pid"] {
			late = true
		}
		if e["event"] == "config.warning" && e["code"] == "master_not_found" {
			t.Errorf("gwrap says it did not find the master: %v", e["message"])
		}
	}
	if !late && !ln.noPtrace { // without the master's files there is no heartbeat to be late
		t.Errorf("no worker.late for worker %v before its postmortem", pm["pid"])
	}
	b, err := os.ReadFile(fmt.Sprint(pm["report"]))
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	var rep struct {
		Gunicorn struct {
			Timeout int `json:"timeout"`
		} `json:"gunicorn"`
		Timeline []json.RawMessage `json:"timeline"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Gunicorn.Timeout != 3 || len(rep.Timeline) < 2 {
		t.Errorf("report: Gunicorn's timeout %d (want 3), %d samples", rep.Gunicorn.Timeout, len(rep.Timeline))
	}
	if ln.check != nil {
		ln.check(t, l, events)
	}
}

// TestMasterNotFoundIsSaid: when Gunicorn's first line came but no master can be found (here a
// command that only talks like Gunicorn), gwrap says so once instead of staying silent.
func TestMasterNotFoundIsSaid(t *testing.T) {
	py := testkit.Python(t)
	p := startGwrap(t, nil, "--report-dir", t.TempDir(), "--", py, "-c", `import os, sys, time
print("[2026-12-03 05:00:00 +0000] [%d] [INFO] Starting gunicorn 20.1.0" % os.getpid(), file=sys.stderr, flush=True)
time.sleep(30)`)
	start := time.Now()
	w := p.stdout.waitEvent(t, 20*time.Second, "a master_not_found warning", func(m map[string]any) bool {
		return m["event"] == "config.warning" && m["code"] == "master_not_found"
	})
	if d := time.Since(start); d < 4*time.Second {
		t.Errorf("said after %v: before the master had a chance to be found", d)
	}
	p.signal(t, syscall.SIGTERM)
	p.wait(t, 20*time.Second)
	n := 0
	for _, e := range p.stdout.events(t) {
		if e["event"] == "config.warning" && e["code"] == "master_not_found" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("said %d times: %v", n, w["message"])
	}
}

// childrenOf lists pid's children from /proc.
func childrenOf(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// waitFor polls cond every 50 ms until it holds, or fails the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
