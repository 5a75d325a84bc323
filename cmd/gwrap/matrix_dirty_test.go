package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// The matrix's dirty-worker block (Gunicorn 25+, run on 26.x): one gwrap running one sync HTTP
// worker and one dirty worker of testkit's dirty app (apps/dirty.py), --dirty-timeout
// dirtyTimeout, one dirty thread, in the matrix's memory cgroup, through every way a dirty worker
// goes wrong, one after another:
//
//  1. its app's init() fails (the file DIRTY_BOOT_FAIL names exists): the arbiter respawns it a
//     hundred times a second; one boot_failure post-mortem; the file is removed, a worker boots;
//  2. the HTTP worker calls a Python loop in it and waits: the HTTP worker times out (--timeout 4)
//     waiting on the arbiter's socket, and its post-mortem names the dirty worker and what it did;
//     the loop then runs past --dirty-timeout: an execution_timeout, cpu_bound, still running,
//     and later worker.execution_end;
//  3. a sleep past --dirty-timeout (called from a thread, so no HTTP worker waits): an
//     execution_timeout, blocked, and its end;
//  4. a C loop holding the GIL stops the dirty worker's own heartbeat: DIRTY WORKER TIMEOUT, the
//     arbiter's SIGKILL; a timeout post-mortem, cpu_bound, for a dirty worker;
//  5. the metrics count them apart (role="dirty", the execution timeouts);
//  6. an allocation past the limit: oom_killed.
//
// Throughout, the dirty arbiter is never taken for an HTTP worker; at the end `gwrap explain`
// reads the same lines as a plain log.

const dirtyTimeout = 6 // --dirty-timeout: past the HTTP worker's --timeout (4), so one call shows both

func runDirtyBlock(t *testing.T, rel testkit.Release) {
	flag := filepath.Join(t.TempDir(), "model-missing")
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mport := freePort(t)
	run := startMatrixWith(t, rel, []string{"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", mport)},
		[]string{"-k", "sync", "--dirty-app", "dirty:Heavy", "--dirty-workers", "1", "--dirty-timeout", fmt.Sprint(dirtyTimeout), "wsgi:app"},
		"DIRTY_BOOT_FAIL="+flag)
	out := run.p.stdout
	rec := func(cs, outcome string, pass bool) { record(rel, "dirty", cs, outcome, pass) }
	fatal := func(cs, what string) {
		rec(cs, what, false)
		t.Fatalf("%s: %s; output:\n%s", cs, what, strings.Join(tail(out.snapshot(), 80), "\n"))
	}
	postmortem := func(cs string, pred func(m map[string]any) bool) (map[string]any, map[string]any) {
		pm, ok := out.wait(matrixDeadline, func(m map[string]any) bool { return m["event"] == "postmortem" && pred(m) })
		if !ok {
			fatal(cs, "no postmortem within "+matrixDeadline.String())
		}
		return pm, readReport(t, pm)
	}

	// 1. The boot loop.
	const boot = "dirty app's init() fails (boot loop)"
	pm, rep := postmortem(boot, func(m map[string]any) bool { return m["kind"] == "boot_failure" })
	repeats, _ := field(rep, "incident", "repeats").(float64)
	pass := pm["role"] == "dirty" && pm["cause"] == "crashed" && repeats > 0 && strings.Contains(fmt.Sprint(pm["summary"]), "the model file is missing")
	if !pass {
		t.Errorf("%s: %v", boot, pm)
	}
	rec(boot, fmt.Sprintf("%v (kind %v, role %v, repeats %v)", pm["cause"], pm["kind"], pm["role"], repeats), pass)
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	dirty := dirtyPID(t, run)
	httpW := run.workerPID(t)

	// 2. The HTTP worker waits on a Python loop that runs past both timeouts.
	const chain, loop = "HTTP worker waiting on a dirty worker", "Python loop past the execution timeout"
	go fetch(run.base+"/dirty/spin?12", 90*time.Second)
	pm, rep = postmortem(chain, func(m map[string]any) bool { return pidOf(m) == httpW })
	dw, _ := field(rep, "incident", "waiting_on_dirty").(map[string]any)
	pass = pm["cause"] == "blocked" && dw != nil && pidOf(dw) == dirty && dw["cause"] == "cpu_bound" && dw["action"] == "dirty:Heavy.spin" &&
		strings.Contains(fmt.Sprint(pm["summary"]), fmt.Sprintf("waiting on dirty worker %d", dirty))
	if !pass {
		t.Errorf("%s: %v\nwaiting_on_dirty %v", chain, pm["summary"], dw)
	}
	rec(chain, fmt.Sprintf("%v, waiting on dirty worker %v (%v, %v)", pm["cause"], field(dw, "pid"), field(dw, "action"), field(dw, "cause")), pass)
	checkExec(t, run, rec, loop, dirty, "dirty:Heavy.spin", "cpu_bound")

	// 3. A sleep past the execution timeout, called from a thread.
	checkExecCall(t, run, rec, "sleep past the execution timeout", "/dirty-bg/sleep?10", dirty, "dirty:Heavy.sleep", "blocked")

	// 4. A C loop holding the GIL: the dirty worker's own heartbeat stops.
	const cloop = "C loop holding the GIL"
	go fetch(run.base+"/dirty-bg/cloop", 10*time.Second)
	pm, rep = postmortem(cloop, func(m map[string]any) bool { return pidOf(m) == dirty && m["kind"] == "timeout" })
	pass = pm["cause"] == "cpu_bound" && pm["role"] == "dirty" && field(rep, "incident", "timeout_escalation") == true &&
		strings.Contains(fmt.Sprint(pm["summary"]), "--dirty-timeout") && strings.Contains(fmt.Sprint(pm["summary"]), "the dirty arbiter SIGKILLed it")
	if !pass {
		t.Errorf("%s: %v", cloop, pm)
	}
	rec(cloop, fmt.Sprintf("%v (kind %v, role %v, escalation %v)", pm["cause"], pm["kind"], pm["role"], field(rep, "incident", "timeout_escalation")), pass)
	waitPIDGone(t, dirty)
	dirty = dirtyPID(t, run)

	// 5. The metrics keep HTTP and dirty workers apart: each kill series counts the post-mortems
	// of its cause and role printed so far (a kill this block did not plan, an HTTP worker timed
	// out twice on a slow machine, is counted as printed), and the ones above are among them.
	const metricsCase = "metrics by role"
	var missing []string
	var body string
	for deadline := time.Now().Add(5 * time.Second); ; {
		_, body = fetch(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport), 5*time.Second)
		kills := map[string]int{}
		for _, m := range out.events(t) {
			if m["event"] == "postmortem" && m["kind"] != "execution_timeout" { // those are counted apart, below
				role := m["role"]
				if role == nil {
					role = "http" // the post-mortem of an HTTP worker has no role field
				}
				kills[fmt.Sprintf(`gwrap_worker_kills_total{cause="%v",role="%v"}`, m["cause"], role)]++
			}
		}
		missing = nil
		for _, want := range []string{`gwrap_worker_kills_total{cause="cpu_bound",role="dirty"}`,
			`gwrap_worker_kills_total{cause="blocked",role="http"}`, `gwrap_worker_kills_total{cause="crashed",role="dirty"}`} {
			if kills[want] == 0 {
				missing = append(missing, want+" (no such post-mortem printed)")
			}
		}
		for series, n := range kills {
			if !strings.Contains(body, fmt.Sprintf("%s %d\n", series, n)) {
				missing = append(missing, fmt.Sprintf("%s %d", series, n))
			}
		}
		for _, want := range []string{
			`gwrap_workers{role="dirty"} 1`, `gwrap_workers{role="http"} 1`,
			`gwrap_dirty_execution_timeouts_total{cause="cpu_bound"} 1`, `gwrap_dirty_execution_timeouts_total{cause="blocked"} 1`,
			fmt.Sprintf(`gwrap_gunicorn_timeout_seconds{role="dirty"} %d`, dirtyTimeout),
		} {
			if !strings.Contains(body, want+"\n") {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(missing) > 0 {
		t.Errorf("%s: missing %q in\n%s", metricsCase, missing, body)
	}
	rec(metricsCase, fmt.Sprintf("%d series off", len(missing)), len(missing) == 0)

	// 6. A model too large for the container.
	const oom = "alloc past the memory limit"
	go fetch(run.base+"/dirty-bg/alloc?2000", 30*time.Second)
	pm, _ = postmortem(oom, func(m map[string]any) bool { return pidOf(m) == dirty })
	pass = pm["cause"] == "oom_killed" && pm["kind"] == "oom_kill" && pm["role"] == "dirty"
	if !pass {
		t.Errorf("%s: %v", oom, pm)
	}
	rec(oom, fmt.Sprintf("%v (kind %v, role %v)", pm["cause"], pm["kind"], pm["role"]), pass)

	// The arbiter was never an HTTP worker.
	const never = "dirty arbiter never an HTTP worker"
	arbiter := 0
	if start, ok := out.wait(0, isEvent("dirty_arbiter.start")); ok {
		arbiter = pidOf(start)
	}
	var bad []string
	for _, m := range out.events(t) {
		if pidOf(m) == arbiter && m["event"] != "dirty_arbiter.start" && m["event"] != "gunicorn.log" {
			bad = append(bad, describe(m))
		}
	}
	if arbiter == 0 || len(bad) > 0 {
		t.Errorf("%s: arbiter %d; events about it: %v", never, arbiter, bad)
	}
	rec(never, fmt.Sprintf("arbiter %d, %d events about it", arbiter, len(bad)), arbiter != 0 && len(bad) == 0)

	explainDirtyLog(t, rel, out.snapshot(), rec)
}

// checkExecCall makes a dirty call and checks its execution timeout.
func checkExecCall(t *testing.T, run *matrixRun, rec func(string, string, bool), cs, path string, dirty int, action, cause string) {
	go fetch(run.base+path, 90*time.Second)
	checkExec(t, run, rec, cs, dirty, action, cause)
}

// checkExec: an action past --dirty-timeout is an execution_timeout of the dirty worker, with the
// cause the evidence shows, reported as still running, then worker.execution_end.
func checkExec(t *testing.T, run *matrixRun, rec func(string, string, bool), cs string, dirty int, action, cause string) {
	out := run.p.stdout
	pm, ok := out.wait(matrixDeadline, func(m map[string]any) bool {
		return m["event"] == "postmortem" && m["kind"] == "execution_timeout" && m["action"] == action
	})
	if !ok {
		rec(cs, "no execution_timeout post-mortem", false)
		t.Fatalf("%s: no execution_timeout post-mortem; output:\n%s", cs, strings.Join(tail(out.snapshot(), 80), "\n"))
	}
	rep := readReport(t, pm)
	end, ended := out.wait(30*time.Second, func(m map[string]any) bool { return m["event"] == "worker.execution_end" && m["action"] == action })
	pass := pidOf(pm) == dirty && pm["cause"] == cause && pm["action_running"] == true && pm["role"] == "dirty" &&
		len(field(rep, "incident", "python_stack").([]any)) > 0 && ended && end["worker_gone"] == false
	if !pass {
		t.Errorf("%s: %v\nend %v", cs, pm, end)
	}
	rec(cs, fmt.Sprintf("%v (kind execution_timeout, running %v, ended after %vs)", pm["cause"], pm["action_running"], field(end, "action_seconds")), pass)
}

// dirtyPID asks the dirty worker its pid through the HTTP worker, waiting for one to boot.
func dirtyPID(t *testing.T, run *matrixRun) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if code, body := fetch(run.base+"/dirty/pid", 10*time.Second); code == 200 {
			var pid int
			if _, err := fmt.Sscan(body, &pid); err == nil && pid > 0 {
				return pid
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no dirty worker answered within 30s; output:\n%s", strings.Join(tail(run.p.stdout.snapshot(), 80), "\n"))
	return 0
}

// explainDirtyLog runs `gwrap explain --json` on the block's Gunicorn lines as a plain log.
func explainDirtyLog(t *testing.T, rel testkit.Release, lines []string, rec func(string, string, bool)) {
	const cs = "gwrap explain on the plain log"
	var plain bytes.Buffer
	for _, l := range lines {
		var m struct {
			Event string `json:"event"`
			Line  string `json:"line"`
		}
		if json.Unmarshal([]byte(l), &m) == nil && m.Event == "gunicorn.log" {
			plain.WriteString(m.Line + "\n")
		}
	}
	path := filepath.Join(t.TempDir(), "gunicorn.log")
	if err := os.WriteFile(path, plain.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := exec.Command(gwrapBin, "explain", "--json", path).Output()
	if err != nil {
		t.Fatalf("gwrap explain: %v", err)
	}
	var ex struct {
		Incidents []map[string]any `json:"incidents"`
	}
	if err := json.Unmarshal(b, &ex); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, inc := range ex.Incidents {
		if inc["role"] == "dirty" {
			s := fmt.Sprint(inc["kind"])
			if a, ok := inc["action"]; ok {
				s += " " + fmt.Sprint(a)
			}
			if inc["timeout_escalation"] == true {
				s += " escalated"
			}
			if inc["possible_oom"] == true {
				s += " possible_oom"
			}
			got = append(got, s)
		}
	}
	want := "boot_failure,execution_timeout dirty:Heavy.spin,execution_timeout dirty:Heavy.sleep,timeout escalated,signal possible_oom"
	pass := strings.Join(got, ",") == want
	if !pass {
		t.Errorf("%s: dirty incidents %q, want %q", cs, got, want)
	}
	rec(cs, strings.Join(got, "; "), pass)
}

func tail(lines []string, n int) []string { return lines[max(0, len(lines)-n):] }
