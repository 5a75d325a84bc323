package containertest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// Where a case runs: on this machine's cgroup (v1 here, runc), in the cgroup v2 guest (crun), or
// both.
const (
	onHost = 1 << iota
	onV2
	everywhere = onHost | onV2
)

// cases are the container cases, in the order they run.
var cases = []struct {
	name  string
	where int
	run   func(t *testing.T, e *engine)
}{
	{"limit_found", everywhere, limitFound},
	{"stop_idle", everywhere, stopIdle},
	{"stop_in_flight", onHost, stopInFlight},
	{"stop_deadline", onHost, stopDeadline},
	{"timeout_blocked", everywhere, timeoutBlocked},
	{"oom_killed", everywhere, oomKilled},
	{"timeout_then_oom", onHost, timeoutThenOOM},
	{"kill_restart_previous_run", everywhere, killRestart},
	{"read_only", onHost, readOnly},
	{"non_root", everywhere, nonRoot},
	{"cap_drop_all", onHost, capDropAll},
	{"termination_log", onHost, terminationLog},
	{"shared_report_volume", onHost, sharedVolume},
	{"entrypoint_env", onHost, entrypointEnv},
	{"oom_group_previous_run", onV2, oomGroup},
}

// measure logs a figure; the cgroup v2 host test relays the guest's (lines "MEASURE name …").
func measure(t *testing.T, name, format string, args ...any) {
	t.Helper()
	t.Logf("MEASURE %s %s", name, fmt.Sprintf(format, args...))
}

// timeoutArgs are the entrypoint's arguments for a case that times a worker out: Gunicorn's
// timeout short enough for a test, long enough for a worker to boot on this machine.
func (e *engine) timeoutArgs(more ...string) []string {
	return append([]string{"app:app", "--timeout", fmt.Sprint(e.timeout)}, more...)
}

// limitFound: gwrap finds the container's cgroup and its 256 MiB limit at start.
func limitFound(t *testing.T, e *engine) {
	c := e.run(t, spec{})
	start := c.ready(t)
	if v := num(start, "cgroup_version"); v != e.cgroup {
		t.Errorf("gwrap.start cgroup_version %d, want %d: %v", v, e.cgroup, start)
	}
	if v, _ := start["memory_limit_bytes"].(float64); v != memoryLimit {
		t.Errorf("gwrap.start memory_limit_bytes %v, want %d: %v", start["memory_limit_bytes"], memoryLimit, start)
	}
	c.wait(t, 30*time.Second, "worker.boot", testkit.IsEvent("worker.boot"))
	// podman exec enters the container's namespaces: its PID 1 is gwrap.
	if comm := podman(t, "exec", c.id, "cat", "/proc/1/comm"); comm != "gwrap" {
		t.Errorf("podman exec sees %q as PID 1, want gwrap", comm)
	}
	measure(t, "gwrap_rss_idle", "%.1f MiB (gwrap as PID 1, one idle sync worker; VmRSS from this machine's /proc)", float64(rss(t, c.hostPID(t)))/(1<<20))
}

// stopIdle: podman stop of an idle container is graceful: exit 0, in under a second.
func stopIdle(t *testing.T, e *engine) {
	c := e.run(t, spec{})
	c.ready(t)
	c.wait(t, 30*time.Second, "worker.boot", testkit.IsEvent("worker.boot"))
	took := c.stop(t, 10)
	code := c.exitCode(t)
	measure(t, "stop_idle", "podman stop took %v, exit code %d", took.Round(time.Millisecond), code)
	if code != 0 {
		t.Errorf("exit code %d after podman stop, want 0", code)
	}
	if took >= e.scale(time.Second) {
		t.Errorf("podman stop of an idle container took %v, want under %v", took, e.scale(time.Second))
	}
	exit := c.wait(t, time.Second, "gwrap.exit", testkit.IsEvent("gwrap.exit"))
	if num(exit, "exit_code") != 0 {
		t.Errorf("gwrap.exit %v", exit)
	}
}

// stopInFlight: a request in flight that fits Gunicorn's graceful timeout completes with 200
// before the container exits 0.
func stopInFlight(t *testing.T, e *engine) {
	c := e.run(t, spec{metrics: true})
	c.ready(t)
	resp := c.send("/sleep?s=3")
	c.busy(t, 1)
	took := c.stop(t, 10)
	r := <-resp
	code := c.exitCode(t)
	measure(t, "stop_in_flight", "podman stop took %v; the request ended %d %q (%v); exit code %d", took.Round(time.Millisecond), r.code, r.body, r.err, code)
	if r.err != nil || r.code != 200 || r.body != "slept\n" {
		t.Errorf("the request in flight ended %d %q %v, want 200 \"slept\"", r.code, r.body, r.err)
	}
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// stopDeadline: podman stop -t 2 while a request runs longer than that: the engine kills the
// container at its deadline, and the termination message says what was going on.
func stopDeadline(t *testing.T, e *engine) {
	msgFile := filepath.Join(t.TempDir(), "termination-log")
	if err := os.WriteFile(msgFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c := e.run(t, spec{metrics: true, opts: []string{"-v", msgFile + ":/dev/termination-log"}})
	c.ready(t)
	resp := c.send("/sleep?s=30")
	c.busy(t, 1)
	took := c.stop(t, 2)
	code := c.exitCode(t)
	r := <-resp
	msg, err := os.ReadFile(msgFile)
	if err != nil {
		t.Fatal(err)
	}
	measure(t, "stop_deadline", "podman stop -t 2 took %v, exit code %d; the request: %d %v; termination message %q", took.Round(time.Millisecond), code, r.code, r.err, msg)
	if took > 2*time.Second+e.scale(1500*time.Millisecond) {
		t.Errorf("podman stop -t 2 took %v: the container outlived the engine's deadline", took)
	}
	if code != 137 {
		t.Errorf("exit code %d, want 137 (killed at the deadline)", code)
	}
	for _, want := range []string{"SIGTERM", "1 of 1 workers busy", "did not finish"} {
		if !bytes.Contains(msg, []byte(want)) {
			t.Errorf("the termination message does not say %q:\n%s", want, msg)
		}
	}
}

// timeoutBlocked: a request sleeping past Gunicorn's timeout is explained as blocked, and the
// report quotes the container's working set as a share of its limit.
func timeoutBlocked(t *testing.T, e *engine) {
	c := e.run(t, spec{args: e.timeoutArgs()})
	c.ready(t)
	c.send("/sleep?s=600")
	to := c.wait(t, time.Minute, "worker.timeout", testkit.IsEvent("worker.timeout"))
	pm := c.wait(t, time.Minute, "postmortem", testkit.IsEvent("postmortem"))
	rep := c.report(t, pm)
	share := evidence(rep, "container working set at its peak before the end")
	measure(t, "timeout_blocked", "cause=%v pid=%v summary=%q working set=%q", pm["cause"], pm["pid"], pm["summary"], share)
	if pm["cause"] != "blocked" || pm["kind"] != "timeout" || num(pm, "pid") != num(to, "pid") {
		t.Errorf("postmortem %v, want cause blocked, kind timeout, pid %v", pm, to["pid"])
	}
	if !regexp.MustCompile(`^[0-9.]+ MiB of 256\.0 MiB \([0-9]+%\)$`).MatchString(share) {
		t.Errorf("the report quotes the working set as %q, not as a share of the 256 MiB limit", share)
	}
	measure(t, "gwrap_rss_after_report", "%.1f MiB", float64(rss(t, c.hostPID(t)))/(1<<20))
}

// evidence is the value of a report's evidence fact named name ("" when absent).
func evidence(rep map[string]any, name string) string {
	facts, _ := field(rep, "verdict", "evidence").([]any)
	for _, f := range facts {
		m, _ := f.(map[string]any)
		if m["fact"] == name {
			v, _ := m["value"].(string)
			return v
		}
	}
	return ""
}

// workerHeld is the worker's peak an OOM summary quotes, when it says the samples saw it.
var workerHeld = regexp.MustCompile(`the worker held up to ([0-9.]+) MiB before the kill`)

// oomKilled: a request allocating past the limit: the kernel kills the worker; gwrap's oom.kill
// and post-mortem name it, and the post-mortem's figure for the worker is the kernel's (within
// 10 %) or says that its last moments were not sampled.
func oomKilled(t *testing.T, e *engine) {
	c := e.run(t, spec{})
	c.ready(t)
	c.wait(t, 30*time.Second, "worker.boot", testkit.IsEvent("worker.boot")) // gwrap watches the worker
	c.send("/alloc?mb=1000")
	oom := c.wait(t, time.Minute, "oom.kill", testkit.IsEvent("oom.kill"))
	pm := c.wait(t, time.Minute, "postmortem", testkit.IsEvent("postmortem"))
	victim := num(pm, "pid")
	var pids []int
	for _, p := range oom["pids"].([]any) {
		pids = append(pids, int(p.(float64)))
	}
	summary, _ := pm["summary"].(string)
	kills := parseOOMKills(kmsg(t), c.id)
	measure(t, "oom_killed", "cause=%v pid=%d oom.kill pids=%v summary=%q kernel=%+v", pm["cause"], victim, pids, summary, kills)
	if pm["cause"] != "oom_killed" || pm["kind"] != "oom_kill" {
		t.Errorf("postmortem %v, want cause oom_killed, kind oom_kill", pm)
	}
	// oom.kill names the victim at once only from /proc read right after the move; here podman's
	// read-only cgroup mount leaves gwrap polling the counter every second, so the victim is often
	// reaped first and the event leaves it to the post-mortem. It must never name another process.
	if len(pids) > 1 || len(pids) == 1 && pids[0] != victim || !strings.HasPrefix(summary, fmt.Sprintf("Worker %d ", victim)) {
		t.Errorf("oom.kill names %v and the summary %q; the victim is %d", pids, summary, victim)
	}
	if len(pids) == 0 && !strings.Contains(fmt.Sprint(oom["message"]), "not identified yet") {
		t.Errorf("oom.kill names no pid and does not say the victim is not identified yet: %v", oom["message"])
	}
	if got := num(field(c.report(t, pm), "incident").(map[string]any), "pid"); got != victim {
		t.Errorf("the report's incident.pid is %d, want %d", got, victim)
	}
	if len(kills) != 1 {
		t.Fatalf("the kernel logged %d OOM kills in the container, want 1: %+v", len(kills), kills)
	}
	kernel := float64(kills[0].rss) / (1 << 20)
	if m := workerHeld.FindStringSubmatch(summary); m != nil {
		held, _ := strconv.ParseFloat(m[1], 64)
		if held < 0.9*kernel || held > 1.1*kernel {
			t.Errorf("the summary says the worker held up to %.1f MiB; the kernel killed it at %.1f MiB (off by more than 10 %%)", held, kernel)
		}
	} else if !strings.Contains(summary, "were not sampled") {
		t.Errorf("the summary quotes no worker peak and does not say its last moments were not sampled (the kernel: %.1f MiB): %q", kernel, summary)
	}
}

// timeoutThenOOM: a timeout, then within 2 s an OOM kill of the replacement worker: each death
// gets its own verdict (blocked, oom_killed).
func timeoutThenOOM(t *testing.T, e *engine) {
	c := e.run(t, spec{metrics: true, args: e.timeoutArgs("--workers", "1")})
	c.ready(t)
	c.send("/sleep?s=600")
	c.busy(t, 1)
	// Queued behind the sleeping request: the replacement worker takes it as soon as it boots.
	c.send("/alloc?mb=1000")
	to := c.wait(t, time.Minute, "worker.timeout", testkit.IsEvent("worker.timeout"))
	oom := c.wait(t, time.Minute, "oom.kill", testkit.IsEvent("oom.kill"))
	gap := eventTime(t, oom).Sub(eventTime(t, to))
	pms := c.waitAll(t, time.Minute, "two postmortems", 2, testkit.IsEvent("postmortem"))
	timedOut := num(to, "pid")
	got := map[int]string{}
	for _, pm := range pms {
		got[num(pm, "pid")], _ = pm["cause"].(string)
	}
	measure(t, "timeout_then_oom", "timeout of %d, then oom.kill %v after %v; verdicts %v", timedOut, oom["pids"], gap.Round(time.Millisecond), got)
	if gap > 2*time.Second {
		t.Errorf("the OOM kill came %v after the timeout: the case needs it within 2 s", gap)
	}
	if len(got) != 2 || got[timedOut] != "blocked" {
		t.Errorf("verdicts %v: want blocked for %d and oom_killed for the replacement", got, timedOut)
	}
	for pid, cause := range got {
		if pid != timedOut && cause != "oom_killed" {
			t.Errorf("verdicts %v: want oom_killed for the replacement %d", got, pid)
		}
	}
	for _, p := range oom["pids"].([]any) {
		if int(p.(float64)) == timedOut {
			t.Errorf("oom.kill names %v: the timed-out worker %d was not the OOM killer's victim", oom["pids"], timedOut)
		}
	}
}

// eventTime is an event's timestamp.
func eventTime(t *testing.T, m map[string]any) time.Time {
	t.Helper()
	s, _ := m["time"].(string)
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("event time %q: %v", s, err)
	}
	return ts
}

// flightSampled waits until the container's flight record holds a worker sample.
func (c *container) flightSampled(t *testing.T) {
	t.Helper()
	path := filepath.Join(c.reports, "flight-"+c.hostname(t)+".a.jsonl")
	deadline := time.Now().Add(c.e.scale(30 * time.Second))
	for {
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(`"k":"w"`)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds no worker sample", path)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killRestart: podman kill -s KILL, then podman start with the same report volume: the new run
// explains the previous one's death in a previous_run post-mortem before Gunicorn starts.
func killRestart(t *testing.T, e *engine) {
	c := e.run(t, spec{})
	c.ready(t)
	c.flightSampled(t)
	podman(t, "kill", "-s", "KILL", c.id)
	if code := c.exitCode(t); code != 137 {
		t.Errorf("exit code %d after SIGKILL, want 137", code)
	}
	c.start(t)
	pm, at := c.out.WaitAfter(t, c.skip, e.scale(time.Minute), "the previous run's post-mortem", testkit.IsEvent("postmortem"))
	_, started := c.out.WaitAfter(t, c.skip, e.scale(time.Minute), "gunicorn.start", testkit.IsEvent("gunicorn.start"))
	rep := c.report(t, pm)
	measure(t, "kill_restart", "kind=%v cause=%v summary=%q", pm["kind"], pm["cause"], pm["summary"])
	if pm["kind"] != "previous_run" {
		t.Errorf("postmortem kind %v, want previous_run: %v", pm["kind"], pm)
	}
	if at > started {
		t.Errorf("the previous run's post-mortem came after gunicorn.start")
	}
	if h := field(rep, "host", "hostname"); h != c.hostname(t) {
		t.Errorf("the report's host %v, want the container's %s", h, c.hostname(t))
	}
	c.ready(t)
}

// warnedOnce fails when a config.warning is said twice, and returns the warnings.
func warnedOnce(t *testing.T, c *container) []string {
	t.Helper()
	var out []string
	for _, ev := range c.events() {
		if ev["event"] != "config.warning" {
			continue
		}
		msg, _ := ev["message"].(string)
		if slices.Contains(out, msg) {
			t.Errorf("said twice: %q", msg)
		}
		out = append(out, msg)
	}
	return out
}

// blockedIn runs a container with extra podman options and checks that a timeout still gets its
// verdict, with its report written; it returns the container.
func blockedIn(t *testing.T, e *engine, s spec) *container {
	t.Helper()
	s.args = e.timeoutArgs()
	c := e.run(t, s)
	c.ready(t)
	c.send("/sleep?s=600")
	pm := c.wait(t, time.Minute, "postmortem", testkit.IsEvent("postmortem"))
	warnings := warnedOnce(t, c)
	measure(t, t.Name(), "cause=%v report=%v warnings=%q", pm["cause"], pm["report"], warnings)
	if pm["cause"] != "blocked" {
		t.Errorf("postmortem %v, want blocked", pm)
	}
	c.report(t, pm)
	return c
}

// readOnly: --read-only --tmpfs /tmp, the report dir on a volume.
func readOnly(t *testing.T, e *engine) {
	blockedIn(t, e, spec{opts: []string{"--read-only", "--tmpfs", "/tmp"}})
}

// nonRoot: --user 65534:65534, gwrap not root; the report volume belongs to that user.
func nonRoot(t *testing.T, e *engine) {
	c := blockedIn(t, e, spec{opts: []string{"--user", "65534:65534"}, owner: "65534:65534"})
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.hostPID(t)))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^Uid:\s+65534\s`).Match(b) {
		t.Errorf("gwrap does not run as 65534:\n%s", b)
	}
}

// capDropAll: --cap-drop ALL, gwrap root without capabilities.
func capDropAll(t *testing.T, e *engine) {
	blockedIn(t, e, spec{opts: []string{"--cap-drop", "ALL"}})
}

// terminationLog: a file mounted at /dev/termination-log, as Kubernetes mounts it, gets the exit
// reason and the verdicts.
func terminationLog(t *testing.T, e *engine) {
	msgFile := filepath.Join(t.TempDir(), "termination-log")
	if err := os.WriteFile(msgFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c := blockedIn(t, e, spec{opts: []string{"-v", msgFile + ":/dev/termination-log"}})
	pm := c.wait(t, time.Second, "postmortem", testkit.IsEvent("postmortem"))
	c.stop(t, 10)
	if code := c.exitCode(t); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	msg, err := os.ReadFile(msgFile)
	if err != nil {
		t.Fatal(err)
	}
	measure(t, "termination_log", "%q", msg)
	for _, want := range []string{"gwrap: exited with code 0\n", "workers killed: 1 blocked\n", fmt.Sprintf(" blocked pid %d: Worker %d ", num(pm, "pid"), num(pm, "pid"))} {
		if !bytes.Contains(msg, []byte(want)) {
			t.Errorf("the termination message does not say %q:\n%s", want, msg)
		}
	}
}

// sharedVolume: two containers on one report volume each keep their own flight record and
// reports.
func sharedVolume(t *testing.T, e *engine) {
	dir := t.TempDir()
	cs := []*container{e.run(t, spec{reports: dir, args: e.timeoutArgs()}), e.run(t, spec{reports: dir, args: e.timeoutArgs()})}
	for _, c := range cs {
		c.ready(t)
		c.send("/sleep?s=600")
	}
	var paths []string
	for _, c := range cs {
		pm := c.wait(t, time.Minute, "postmortem", testkit.IsEvent("postmortem"))
		rep := c.report(t, pm)
		host := c.hostname(t)
		paths = append(paths, c.hostPath(t, pm["report"].(string)))
		if pm["cause"] != "blocked" || field(rep, "host", "hostname") != host {
			t.Errorf("container %s: postmortem %v, report host %v", host, pm, field(rep, "host", "hostname"))
		}
		c.flightSampled(t)
	}
	for _, c := range cs {
		c.stop(t, 10)
		if code := c.exitCode(t); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	measure(t, "shared_report_volume", "files %q", names(files))
	if paths[0] == paths[1] {
		t.Errorf("both containers wrote %s", paths[0])
	}
	for i, c := range cs {
		if _, err := os.Stat(paths[i]); err != nil {
			t.Errorf("container %d's report: %v", i, err)
		}
		rec, err := os.ReadFile(filepath.Join(dir, "flight-"+c.hostname(t)+".a.jsonl"))
		if err != nil {
			t.Errorf("container %d's flight record: %v", i, err)
			continue
		}
		if !bytes.Contains(rec, []byte(`"host":"`+c.hostname(t)+`"`)) || !bytes.Contains(rec, []byte(`"k":"x"`)) {
			t.Errorf("container %d's flight record is not its own or was not closed:\n%.400s", i, rec)
		}
	}
}

func names(paths []string) []string {
	var out []string
	for _, p := range paths {
		out = append(out, filepath.Base(p))
	}
	return out
}

// entrypointEnv: entrypoint.sh configured as a user would with -e: APP_MODULE names the user's
// app, PORT, WEB_CONCURRENCY, and GUNICORN_CMD_ARGS whose settings win over the entrypoint's
// defaults.
func entrypointEnv(t *testing.T, e *engine) {
	dir := t.TempDir()
	app := "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'hello\\n']\n"
	if err := os.WriteFile(filepath.Join(dir, "hello.py"), []byte(app), 0o644); err != nil {
		t.Fatal(err)
	}
	c := e.run(t, spec{port: 8080, opts: []string{"-v", dir + "/hello.py:/app/hello.py:ro",
		"-e", "APP_MODULE=hello:application", "-e", "PORT=8080", "-e", "WEB_CONCURRENCY=3",
		"-e", "GUNICORN_CMD_ARGS=--timeout 4 --graceful-timeout 3"}})
	start := c.ready(t)
	code, body, err := c.get("/", 5*time.Second)
	var cmd []string
	for _, a := range start["command"].([]any) {
		cmd = append(cmd, a.(string))
	}
	measure(t, "entrypoint_env", "command %q timeout_s=%v workers=%v; GET / → %d %q", cmd, start["timeout_s"], start["workers"], code, body)
	if err != nil || code != 200 || body != "hello\n" {
		t.Errorf("GET / on PORT 8080: %d %q %v, want the app APP_MODULE names", code, body, err)
	}
	if !slices.Contains(cmd, "hello:application") || !slices.Contains(cmd, "0.0.0.0:8080") {
		t.Errorf("command %q: want APP_MODULE's app bound on PORT", cmd)
	}
	if slices.Contains(cmd, "--timeout") || slices.Contains(cmd, "--graceful-timeout") {
		t.Errorf("command %q: the entrypoint added a default that GUNICORN_CMD_ARGS already sets", cmd)
	}
	if num(start, "timeout_s") != 4 || num(start, "workers") != 3 {
		t.Errorf("gwrap.start timeout_s %v workers %v, want 4 and 3 (GUNICORN_CMD_ARGS, WEB_CONCURRENCY)", start["timeout_s"], start["workers"])
	}
	c.waitAll(t, 30*time.Second, "three workers booted", 3, testkit.IsEvent("worker.boot"))
}

// oomGroup: memory.oom.group=1 on the container's cgroup, as kubelet sets it on cgroup v2: one
// worker's OOM kill kills the whole container, gwrap included; the next start explains it from
// the flight record.
func oomGroup(t *testing.T, e *engine) {
	c := e.run(t, spec{opts: []string{"--cgroup-conf", "memory.oom.group=1"}})
	c.ready(t)
	c.wait(t, 10*time.Second, "the memory.oom.group warning", func(m map[string]any) bool {
		msg, _ := m["message"].(string)
		return m["event"] == "config.warning" && strings.Contains(msg, "memory.oom.group is 1")
	})
	c.flightSampled(t)
	c.send("/alloc?mb=1000")
	if code := c.exitCode(t); code != 137 {
		t.Errorf("exit code %d after the group OOM kill, want 137", code)
	}
	c.start(t)
	pm, at := c.out.WaitAfter(t, c.skip, e.scale(time.Minute), "the previous run's post-mortem", testkit.IsEvent("postmortem"))
	_, started := c.out.WaitAfter(t, c.skip, e.scale(time.Minute), "gunicorn.start", testkit.IsEvent("gunicorn.start"))
	measure(t, "oom_group", "kind=%v cause=%v summary=%q", pm["kind"], pm["cause"], pm["summary"])
	if pm["kind"] != "previous_run" || pm["cause"] != "oom_killed" || at > started {
		t.Errorf("postmortem %v, want a previous_run oom_killed before gunicorn.start", pm)
	}
}
