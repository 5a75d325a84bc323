package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/gwrap/gwrap/engine"
	"github.com/gwrap/gwrap/flightrec"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/internal/guard"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/output"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// updateContract rewrites the contract's golden files: go test ./cmd/gwrap -run TestContractGolden -update
var updateContract = flag.Bool("update", false, "rewrite the golden files of TestContractGolden")

// The contract's golden files: every event gwrap writes on stdout, with its fields in order,
// /metrics after those events, and the termination message.
const (
	goldenEvents      = "testdata/contract/events.jsonl"
	goldenMetrics     = "testdata/contract/metrics.txt"
	goldenTermination = "testdata/contract/termination.txt"
)

// contractClock is a clock the test moves; safe from any goroutine.
type contractClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *contractClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *contractClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// fakeReports is the engine's Reporter: a path for every report, and one failure.
type fakeReports struct {
	n    int
	fail int // the nth write fails (1-based; 0: none)
}

func (r *fakeReports) Write(rep postmortem.Report) (string, error) {
	r.n++
	if r.n == r.fail {
		return "", errors.New("the report dir /reports is not keeping up: 32 post-mortems wait to be written")
	}
	return "/reports/" + rep.ID + ".json", nil
}

// TestContractGolden writes every contract event through gwrap's real outputs (stdout's JSON
// writer, /metrics, the termination message) and compares them with the golden files: the
// engine driven through a Gunicorn 26 run with HTTP and dirty workers (boots, a late worker, a
// timeout with its SIGKILL, a crash, a stuck boot, an OOM kill, an execution timeout, signals,
// the arbiter's death, the exit), two runs where Gunicorn is not seen as expected, and
// cmd/gwrap's own events (start, start-up lint, start-up signals, the stopped master, a new
// master, the previous run's post-mortem, panics, the report dir, the exit). A field renamed,
// dropped, retyped or moved shows as a diff. Times are the test's; pids and paths that vary are
// replaced.
func TestContractGolden(t *testing.T) {
	events, metrics, termination := contractOutputs(t)
	checkGolden(t, goldenEvents, events)
	checkGolden(t, goldenMetrics, metrics)
	checkGolden(t, goldenTermination, termination)
}

var (
	// sigName is a signal as every event names it.
	sigName = regexp.MustCompile(`^SIG[A-Z0-9]+$`)
	// placeholders are normalizeContract's numbers, as numbers.
	placeholders = strings.NewReplacer(`$PID`, "1", `$CORES`, "1")
)

// TestContractSaysEachThingOneWay: over every event of the contract, a config.warning has one
// code field (and no key), and a signal has one name (SIGHUP, never Go's "hangup"), whichever
// part of gwrap wrote it.
func TestContractSaysEachThingOneWay(t *testing.T) {
	events, _, _ := contractOutputs(t)
	for i, l := range strings.Split(strings.TrimSpace(events), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(placeholders.Replace(l)), &m); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, l)
		}
		if m["event"] == "config.warning" {
			if c, _ := m["code"].(string); c == "" {
				t.Errorf("line %d: a config.warning without a code: %s", i+1, l)
			}
			if _, ok := m["key"]; ok {
				t.Errorf("line %d: a config.warning with a key besides its code: %s", i+1, l)
			}
		}
		if sig, ok := m["signal"]; ok {
			if s, _ := sig.(string); !sigName.MatchString(s) {
				t.Errorf("line %d: signal %q is not named as every event names it (SIGHUP): %s", i+1, sig, l)
			}
		}
	}
}

// contractOutputs runs the contract's scenario and returns what it wrote: the events on stdout,
// /metrics and the termination message, with what varies from machine to machine replaced.
func contractOutputs(t *testing.T) (events, metrics, termination string) {
	var buf bytes.Buffer
	t0 := time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC)
	out := output.NewWriter(&buf, io.Discard, "json", func() time.Time { return t0 })
	ps := newParts(out)
	proc := probes.NewFS(t.TempDir()) // nothing to read: /metrics' live readings are absent
	fl := newFleet(out, ps, proc, gunicorn.Settings{Timeout: 30, Workers: 3, WorkerClass: "sync", Threads: 1}, true)

	// cmd/gwrap's start: the start event, the start-up lint, a signal during start-up.
	root := "../../memwatch/testdata/v2-k8s-pod"
	cg, err := memwatch.Open(memwatch.Options{CgroupRoot: filepath.Join(root, "sys"), ProcRoot: filepath.Join(root, "proc")})
	if err != nil {
		t.Fatal(err)
	}
	st := cg.Sample()
	cfg := config{Command: []string{"/usr/bin/gunicorn", "app:app", "--password=hunter2"}, ReportDir: "/reports", StopBudget: 8 * time.Second,
		Thresholds: postmortem.DefaultThresholds()}
	settings := gunicorn.Settings{Timeout: 30, GracefulTimeout: 60, Workers: 3, WorkerClass: "sync", Threads: 1, ErrorLog: "-", LogLevel: "info",
		Sources: map[string]gunicorn.Source{}, Problems: []string{"the config file gunicorn.conf.py did not evaluate: NameError"}}
	startEvent(out, cfg, cg, st, settings)
	out.Warn("env_unknown", "GWRAP_REPORTDIR is not a gwrap setting and is ignored; did you mean GWRAP_REPORT_DIR?")
	lintAtStart(out, cfg, cg, st, settings)
	sigs := make(chan os.Signal) // unbuffered: the send returns once the watch took it, end once it said it
	_, end := watchStartup(sigs, out)
	sigs <- syscall.SIGHUP
	end()

	// Degradations cmd/gwrap says once.
	out.WarnOnce("cgroup", "cgroup_unreadable", "cannot read the container's cgroup, memory and OOM evidence will be missing: no memory cgroup found")
	out.WarnOnce("pystack", "pystack", "Python stacks are off: no writable private dir")
	out.WarnOnce("cannot read the workers' schedstat; that evidence is missing from reports", "proc_unreadable", "cannot read the workers' schedstat; that evidence is missing from reports")
	out.WarnOnce("probes", "probes_stopped", "worker monitoring stopped: command 17097: stat /proc/17097: no such file or directory")
	out.WarnOnce("oom", "oom_polled", "OOM notifications for /sys/fs/cgroup/memory are unavailable (permission denied): the oom_kill counter is polled every 1s instead")
	out.WarnOnce("cgroup-missing-memory.stat (missing)", "cgroup_missing", "cannot read the cgroup's memory.stat (missing); that evidence will be missing")
	out.WarnOnce("flight-queue", "flight_queue", "the report dir /reports is not keeping up with the flight record: its lines are dropped and counted in gwrap.exit")
	out.WarnOnce("flight-host", "flight_host", "cannot read the host name (no such file); the flight record is kept as host \"unknown\"")
	out.WarnOnce("report-write", "report_write", "cannot write post-mortem reports to /reports: disk full (they still appear on stdout)")
	out.WarnOnce("flight", "flight_record", "cannot read the previous run's flight record: permission denied")
	out.WarnOnce("flight record: refused", "flight_record", "flight record: /reports/flight-h.a.jsonl is a symlink; the flight record goes on without it")
	out.WarnOnce("settings-static", "settings_static", "Gunicorn's settings are read from its command line only, without running or reading its config file: gwrap (uid 1000) cannot act as uid 33")
	out.WarnOnce("master-by-hint", "master_unconfirmed", "gwrap took process 100 for the Gunicorn master on its command line or start line alone")
	out.WarnOnce("settings-unknown", "settings_unknown", "cannot learn the settings of the Gunicorn master 100")
	out.Warn("report_dir", "report dir /reports: not a directory; post-mortems will not be written")
	out.Warn("metrics", "cannot serve /metrics: metrics: listen :1: permission denied")
	ps.panicked(guard.Panic{Part: string(partCgroup), Message: "runtime error: index out of range [3] with length 3", Where: "memwatch/cgroup.go:120"}, true)

	// The previous run's post-mortem, from a flight record left unclosed.
	// Written elsewhere and copied, as a SIGKILL leaves the segments: no process holds their lock.
	dir, elsewhere := t.TempDir(), t.TempDir()
	host, _ := os.Hostname()
	died := t0.Add(-time.Minute)
	rec := flightrec.Open(flightrec.Options{Dir: elsewhere, Identity: flightrec.Identity{Host: host, PID: 77, Version: "dev", Start: died.Add(-time.Hour)},
		Now: func() time.Time { return died }})
	defer rec.Close()
	for i := 0; i < 3; i++ {
		rec.Container(memwatch.Stats{Time: died.Add(time.Duration(i-3) * time.Second), Limit: memwatch.Value{V: 512 << 20, Known: true},
			WorkingSet: memwatch.Value{V: uint64(500+i) << 20, Known: true}, OOMKill: memwatch.Value{V: uint64(i / 2), Known: true}})
	}
	rec.Signal(syscall.SIGTERM, true)
	for _, f := range flightrec.Files(elsewhere, host) {
		if b, err := os.ReadFile(f); err == nil {
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o640); err != nil {
				t.Fatal(err)
			}
		}
	}
	pcfg := cfg
	pcfg.ReportDir = dir
	store := postmortem.NewStore(dir, postmortem.Retention{})
	reports := newReportQueue(store, out, ps)
	flight := startFlight(pcfg, out, ps, reports, settings, memwatch.Stats{}, t0)
	flight.awaitRecovery()
	drain(flight.q)
	drain(reports.q)

	// The engine: a Gunicorn 26 run.
	clock := &contractClock{t: t0}
	runEngine(t, out, fl, clock, t0)

	// The master stopped and continued, a USR2 upgrade's new master, a panic, the exit.
	stoppedEvent(out, 100, true, syscall.SIGSTOP)
	stoppedEvent(out, 100, false, 0)
	out.NewMaster(120)
	unwrittenWarning(out, "/reports", 2, 40)
	tlog := filepath.Join(t.TempDir(), "termination-log")
	// A message that cannot be written is said (by a fleet of its own: gwrap writes one message at exit).
	newFleet(out, ps, proc, settings, false).terminate("/proc/nonexistent/termination-log", "exited with code 0")
	fl.terminate(tlog, "exited with code 0")
	flight.finish(time.Now().Add(5 * time.Second))
	out.Finish(func() {
		out.Exit(output.Exit{Code: 0, Reason: "exited with code 0", Incidents: 7, ReportsUnwritten: 2, FlightLinesUnwritten: 40})
	}, outputFlush, io.Discard)
	// A stop during start-up: gwrap exits before Gunicorn runs.
	var early bytes.Buffer
	exitAtStartup(output.NewWriter(&early, io.Discard, "json", func() time.Time { return t0 }), syscall.SIGTERM, io.Discard)

	term, err := os.ReadFile(tlog)
	if err != nil {
		t.Fatal(err)
	}
	return normalizeContract(buf.String()+early.String(), dir, host), exposition(t, fl), normalizeContract(string(term), dir, host)
}

// runEngine drives an engine through a Gunicorn 26 run, and two runs where Gunicorn is not seen
// as expected (its master not found; its lines not reaching gwrap), writing to out and fl.
func runEngine(t *testing.T, out *output.Writer, fl *fleet, clock *contractClock, t0 time.Time) {
	// /proc: every pid is a live child of the master (its start time 900+pid), but 106, which the
	// OOM killer's SIGKILL is on its way to, and the ones reaped (die: the master's line about
	// them comes after).
	killed, gone := map[int]bool{106: true}, map[int]bool{}
	var mu sync.Mutex
	die := func(pid int) { mu.Lock(); gone[pid] = true; mu.Unlock() }
	fate := func(id probes.ID) probes.Fate {
		mu.Lock()
		defer mu.Unlock()
		if gone[id.PID] {
			return probes.Fate{ID: probes.ID{PID: id.PID}, Gone: true}
		}
		return probes.Fate{ID: probes.ID{PID: id.PID, StartTime: uint64(900 + id.PID)}, PPID: 100, State: "S", StatusKnown: true,
			KillPending: killed[id.PID]}
	}
	reps := &fakeReports{fail: 3}
	settings := gunicorn.Settings{Timeout: 30, GracefulTimeout: 30, Workers: 3, WorkerClass: "sync", Threads: 1, LogLevel: "info", ErrorLog: "-",
		DirtyWorkers: 1, DirtyApps: []string{"dirty:Heavy"}, DirtyTimeout: 6, DirtyThreads: 1, Sources: map[string]gunicorn.Source{}}
	newEngine := func(s gunicorn.Settings) (*engine.Engine, func()) {
		eng := engine.New(engine.Config{
			Settings: s, Thresholds: postmortem.DefaultThresholds(), Host: postmortem.Host{Hostname: "web-1", GwrapVersion: "dev"},
			Reports: reps,
			Fate:    fate,
			Fates: func(master int) ([]probes.Fate, error) {
				var fs []probes.Fate
				for _, pid := range []int{101, 102, 103, 104, 105, 106} {
					if f := fate(probes.ID{PID: pid}); !f.Gone && master == 100 {
						fs = append(fs, f)
					}
				}
				return fs, nil
			},
			OnSettings: fl.setSettings, // as gwrap wires it
			History:    5 * time.Minute, Interval: time.Hour, Now: clock.now,
		}, fl)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { eng.Run(ctx); close(done) }()
		return eng, func() { cancel(); <-done }
	}
	line := func(eng *engine.Engine, at time.Time, pid int, level, msg string) {
		clock.set(at)
		eng.Line("stderr", []byte(fmt.Sprintf("[%s] [%d] [%s] %s", at.Format("2006-01-02 15:04:05 -0700"), pid, level, msg)))
	}
	sample := func(id probes.ID, at time.Time, age time.Duration, cpu float64, role probes.Role) probes.Event {
		return probes.Event{Kind: probes.EventSample, ID: id, Time: at, Role: role, Sample: probes.Sample{Time: at, State: "S", CPUUser: cpu,
			RSSAnon: 80 << 20, RSSFile: 10 << 20, HeartbeatAge: age, Heartbeats: true}}
	}
	cgroup := func(at time.Time, oomKill uint64) memwatch.Stats {
		return memwatch.Stats{Time: at, Version: 2, Usage: memwatch.Value{V: 700 << 20, Known: true}, WorkingSet: memwatch.Value{V: 600 << 20, Known: true},
			Limit: memwatch.Value{V: 1 << 30, Known: true}, OOMKill: memwatch.Value{V: oomKill, Known: true}, CPUQuota: memwatch.Cores{V: 2, Known: true}}
	}
	eng, stop := newEngine(settings)
	master, arbiter := probes.ID{PID: 100, StartTime: 1000}, probes.ID{PID: 101, StartTime: 1001}
	late, slow, crash, stuck, oom := probes.ID{PID: 102, StartTime: 1002}, probes.ID{PID: 103, StartTime: 1003},
		probes.ID{PID: 104, StartTime: 1004}, probes.ID{PID: 105, StartTime: 1005}, probes.ID{PID: 106, StartTime: 1006}
	dirty := probes.ID{PID: 110, StartTime: 1010}
	at := t0
	eng.Started(100)
	eng.Probe(probes.Event{Kind: probes.EventMaster, ID: master, Time: at})
	line(eng, at, 100, "INFO", "Starting gunicorn 26.2.2")
	line(eng, at, 100, "INFO", "Listening at: http://127.0.0.1:8000 (100)")
	line(eng, at, 100, "INFO", "Using worker: sync")
	line(eng, at, 100, "INFO", "Spawned dirty arbiter (pid: 101) at /tmp/gunicorn-dirty-x/arbiter.sock")
	line(eng, at, 101, "INFO", "Spawned dirty worker (pid: 110) with apps: ['dirty:Heavy']")
	eng.Probe(probes.Event{Kind: probes.EventArbiter, ID: arbiter, Time: at, DirtySockets: []string{"/tmp/gunicorn-dirty-x/arbiter.sock"}})
	for _, id := range []probes.ID{late, slow, crash, oom} {
		eng.Probe(probes.Event{Kind: probes.EventBoot, ID: id, Time: at, Master: 100})
		line(eng, at, id.PID, "INFO", fmt.Sprintf("Booting worker with pid: %d", id.PID))
	}
	eng.Probe(probes.Event{Kind: probes.EventBoot, ID: dirty, Time: at, Role: probes.RoleDirty})
	// Ten healthy seconds.
	for i := 1; i <= 10; i++ {
		at = t0.Add(time.Duration(i) * time.Second)
		clock.set(at)
		cg := cgroup(at, 0)
		var sweep []probes.Event
		for _, id := range []probes.ID{late, slow, crash, oom} {
			sweep = append(sweep, sample(id, at, time.Second, 2, ""))
		}
		sweep = append(sweep, sample(dirty, at, time.Second, 1, probes.RoleDirty))
		eng.Sweep(&cg, sweep)
	}
	// Worker 102 hangs on its database and is timed out; 103 is late, then beats again.
	deep := &probes.Deep{Time: at, Wchan: "do_poll", Syscall: "poll", Sockets: []probes.Socket{{Proto: "tcp", Local: "10.0.0.2:40000", Remote: "10.0.0.5:5432", State: "ESTABLISHED", Inode: 7}},
		Stack: &probes.PyStack{Frames: []string{"Thread 0x1 (most recent call first):", "  File \"/srv/app.py\", line 42 in report"}, Thread: "0x1", Top: "app.py:42 in report"}}
	for i := 11; i <= 40; i++ {
		at = t0.Add(time.Duration(i) * time.Second)
		clock.set(at)
		cg := cgroup(at, 0)
		age := time.Duration(i-10) * time.Second
		sweep := []probes.Event{sample(late, at, age, 0.5, ""), sample(crash, at, time.Second, 2, ""), sample(oom, at, time.Second, 3, "")}
		if i <= 27 {
			sweep = append(sweep, sample(slow, at, age, 90, ""))
		}
		if i == 25 {
			sweep = append(sweep, probes.Event{Kind: probes.EventLate, ID: late, Time: at, Share: 0.5, Timeout: 30 * time.Second, Sample: sweep[0].Sample, Deep: deep},
				// 103 waits on the dirty worker serving its call; the dirty worker is late too.
				probes.Event{Kind: probes.EventLate, ID: slow, Time: at, Share: 0.5, Timeout: 30 * time.Second, Sample: sweep[3].Sample,
					Deep:  &probes.Deep{Time: at, Sockets: []probes.Socket{{Proto: "unix", Remote: "/tmp/gunicorn-dirty-x/arbiter.sock", State: "CONNECTED", Inode: 9}}},
					Dirty: []probes.DirtyCall{{ID: dirty, Stack: &probes.PyStack{Frames: []string{"thread 0x2"}, Top: "apps/dirty.py:28 in spin", DirtyRunning: true, DirtyAction: "spin"}}}},
				probes.Event{Kind: probes.EventLate, ID: dirty, Time: at, Share: 0.5, Timeout: 6 * time.Second, Role: probes.RoleDirty,
					Sample: probes.Sample{Time: at, State: "R", CPUUser: 99, HeartbeatAge: 3 * time.Second, Heartbeats: true}, Deep: &probes.Deep{Time: at}})
		}
		if i == 28 {
			sweep = append(sweep, probes.Event{Kind: probes.EventRecovered, ID: slow, Time: at})
		}
		eng.Sweep(&cg, sweep)
	}
	line(eng, at, 100, "CRITICAL", "WORKER TIMEOUT (pid:102)")
	line(eng, at, 999, "CRITICAL", "WORKER TIMEOUT (pid:103)") // the app's own print: not believed
	at = at.Add(time.Second)
	die(102)
	line(eng, at, 100, "ERROR", "Worker (pid:102) was sent SIGKILL! Perhaps out of memory?")
	eng.Probe(probes.Event{Kind: probes.EventVanish, ID: late, Time: at})
	// Worker 104 crashes; 105 is stuck booting, then boots; 106 is OOM-killed.
	at = at.Add(time.Second)
	die(104)
	line(eng, at, 100, "ERROR", "Worker (pid:104) exited with code 1")
	eng.Probe(probes.Event{Kind: probes.EventVanish, ID: crash, Time: at})
	eng.Probe(probes.Event{Kind: probes.EventBoot, ID: stuck, Time: at, Master: 100})
	at = at.Add(31 * time.Second)
	clock.set(at)
	eng.Probe(probes.Event{Kind: probes.EventStuckBoot, ID: stuck, Time: at, Timeout: 30 * time.Second,
		Sample: probes.Sample{Time: at, State: "R", CPUUser: 99, HeartbeatAge: 31 * time.Second}, Deep: &probes.Deep{Time: at, Wchan: "0"}})
	at = at.Add(4 * time.Second)
	eng.Probe(probes.Event{Kind: probes.EventRecovered, ID: stuck, Time: at})
	at = at.Add(time.Second)
	clock.set(at)
	cg := cgroup(at, 1)
	eng.Sweep(&cg, nil)
	eng.OOM(memwatch.OOMEvent{Time: at, Count: 1, Total: 1})
	eng.Probe(probes.Event{Kind: probes.EventVanish, ID: oom, Time: at})
	// The dirty worker runs an action past --dirty-timeout; it ends later.
	at = at.Add(time.Second)
	line(eng, at, 110, "WARNING", "Execution timeout for dirty:Heavy.spin after 6s")
	running := &probes.PyStack{Frames: []string{"thread 0x2", "  /srv/apps/dirty.py:28 in spin"}, Top: "apps/dirty.py:28 in spin", DirtyRunning: true, DirtyAction: "spin"}
	eng.Probe(probes.Event{Kind: probes.EventStack, ID: dirty, Time: at, Role: probes.RoleDirty, Deep: &probes.Deep{Time: at, Stack: running}})
	at = at.Add(2 * time.Second)
	eng.Probe(probes.Event{Kind: probes.EventStack, ID: dirty, Time: at, Role: probes.RoleDirty,
		Deep: &probes.Deep{Time: at, Stack: &probes.PyStack{Frames: []string{"thread 0x2", "  idle"}}}})
	// The arbiter's death, signals, the end.
	at = at.Add(time.Second)
	die(101)
	line(eng, at, 100, "WARNING", "Dirty arbiter (pid:101) killed by signal 9")
	eng.Probe(probes.Event{Kind: probes.EventArbiterGone, ID: arbiter, Time: at})
	at = at.Add(time.Second)
	clock.set(at)
	eng.Signal(syscall.SIGWINCH, false)
	eng.Signal(syscall.SIGHUP, true)
	line(eng, at, 100, "INFO", "Handling signal: hup")
	at = at.Add(time.Second)
	clock.set(at)
	eng.Signal(syscall.SIGTERM, true)
	line(eng, at, 100, "INFO", "Handling signal: term")
	line(eng, at, 100, "INFO", "Shutting down: Master")
	eng.ChildExit(engine.ExitInfo{Code: 0, Reason: "exited with code 0"})
	stop()

	// Gunicorn's lines come, its master is never found.
	at = at.Add(time.Minute)
	eng, stop = newEngine(settings)
	line(eng, at, 200, "INFO", "Starting gunicorn 23.0.0")
	eng.Probe(sample(probes.ID{PID: 201, StartTime: 2001}, at.Add(6*time.Second), time.Second, 1, ""))
	stop()
	// The master is found, its workers live, and none of its lines come.
	eng, stop = newEngine(settings)
	eng.Probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: 300, StartTime: 3000}, Time: at})
	eng.Probe(probes.Event{Kind: probes.EventBoot, ID: probes.ID{PID: 301, StartTime: 3001}, Time: at, Master: 300})
	eng.Probe(sample(probes.ID{PID: 301, StartTime: 3001}, at.Add(6*time.Second), time.Second, 1, ""))
	stop()
}

var (
	gwrapPIDField = regexp.MustCompile(`"gwrap_pid":\d+`)
	hostCores     = regexp.MustCompile(`"host_cores":\d+`)
)

// normalizeContract replaces what varies from machine to machine: the report dir, the host
// name, gwrap's pid and the host's cores.
func normalizeContract(s, dir, host string) string {
	s = strings.ReplaceAll(s, dir, "$REPORT_DIR")
	if host != "" {
		s = strings.ReplaceAll(s, host, "$HOST")
	}
	s = gwrapPIDField.ReplaceAllString(s, `"gwrap_pid":$$PID`)
	return hostCores.ReplaceAllString(s, `"host_cores":$$CORES`)
}

// exposition is /metrics in the text format, without gwrap's process metrics and Go's version.
func exposition(t *testing.T, fl *fleet) string {
	mfs, err := fl.m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "gwrap_process_") {
			continue
		}
		if mf.GetName() == "gwrap_build_info" {
			for _, m := range mf.Metric {
				for _, l := range m.Label {
					if l.GetName() == "goversion" {
						v := "$GOVERSION"
						l.Value = &v
					}
				}
			}
		}
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *updateContract {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < max(len(gl), len(wl)); i++ {
			g, w := "", ""
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Errorf("%s differs at line %d:\n got: %s\nwant: %s", path, i+1, g, w)
				return
			}
		}
	}
}
