package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gwrap/gwrap/engine"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/internal/asuser"
	"github.com/gwrap/gwrap/internal/group"
	"github.com/gwrap/gwrap/internal/guard"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/output"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
	"github.com/gwrap/gwrap/supervisor"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// run is gwrap: it returns the process exit code and, for usage errors, the message for stderr.
func run(args []string, env func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if len(args) > 0 {
		switch args[0] {
		case "explain":
			return runExplain(args[1:], stdin, stdout, stderr)
		case "report":
			return runReport(args[1:], env, stdout, stderr)
		case "status":
			return runStatus(args[1:], env, stdout, stderr)
		case "version", "--version":
			fmt.Fprintln(stdout, "gwrap", version)
			return 0, nil
		}
	}
	cfg, err := parseConfig(args, env, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0, nil
	}
	if err != nil {
		fmt.Fprint(stderr, usageText)
		return 2, err
	}
	return supervise(cfg, stdout, stderr)
}

// outputFlush bounds the wait for stdout to take gwrap's last lines (see defaultStopBudget).
const outputFlush = time.Second

// supervise runs the child and everything that watches it, and returns the exit code.
func supervise(cfg config, stdout, stderr io.Writer) (int, error) {
	sigs := early
	if sigs == nil { // run called in-process: subscribe now
		ch, stop := subscribe()
		defer stop()
		sigs = ch
	}
	out := output.NewWriter(stdout, stderr, cfg.LogFormat, time.Now)
	ps := newParts(out)
	// Start-up (the settings' Python takes up to 5 s) ends at a TERM/INT/QUIT, before Gunicorn.
	startCtx, endStartup := watchStartup(sigs, out)

	cg, cgErr := memwatch.Open(memwatch.Options{CgroupRoot: cfg.CgroupRoot, ProcRoot: cfg.ProcRoot, Path: cfg.CgroupPath})
	var cgStats memwatch.Stats
	if cgErr != nil {
		out.WarnOnce("cgroup", "cgroup_unreadable", "cannot read the container's cgroup, memory and OOM evidence will be missing: "+cgErr.Error())
	} else {
		cgStats = cg.Sample()
	}
	// oomTotal is the cgroup's oom_kill counter as the engine was last told of it: a move past it
	// when Gunicorn dies of SIGKILL is an OOM kill no worker's death took (the master's own).
	var oomTotal atomic.Uint64
	if cgStats.OOMKill.Known {
		oomTotal.Store(cgStats.OOMKill.V)
	}

	settings := readSettings(startCtx, cfg)
	if sig := endStartup(); sig != nil {
		return exitAtStartup(out, sig, stderr)
	}
	if cfg.ReportDir == "" {
		cfg.ReportDir = postmortem.DefaultDir(fileExists)
	}
	startEvent(out, cfg, cg, cgStats, settings)
	for _, w := range cfg.Warnings {
		out.Warn("env_unknown", w)
	}
	lintAtStart(out, cfg, cg, cgStats, settings)

	// The report dir is written only by the queues' own goroutines (disk.go): not here, before
	// Gunicorn starts, nor on the relay, signal, engine or stop paths.
	store := postmortem.NewStore(cfg.ReportDir, postmortem.Retention{MaxCount: cfg.ReportMaxCount, MaxBytes: cfg.ReportMaxBytes})
	reports := newReportQueue(store, out, ps)
	stk := newStacks(cfg.PythonStacks, cfg.ProcRoot, gunicorn.Tracked(), cfg.hookRequests(), ps, func(msg string) { out.WarnOnce("pystack", "pystack", msg) })
	defer stk.close()
	proc := procFS(cfg.ProcRoot)
	var eng *engine.Engine    // made below, once the watcher it tells exists
	var batch []probes.Event  // the sweep's events while Options.Sweep runs it (the watcher's goroutine only)
	var lastCg memwatch.Stats // the sweep's cgroup sample, for Options.Private (the watcher's goroutine only)
	climb := newMemClimb()    // sweeps at --fast-interval while memory climbs (memclimb.go)
	flight := startFlight(cfg, out, ps, reports, settings, cgStats, time.Now())
	flight.awaitRecovery()
	fl := newFleet(out, ps, proc, settings, cfg.MetricsAddr != "")
	hostname, _ := os.Hostname()
	reqs := newRequests(cfg.RecordRequests && cfg.PythonStacks, cfg.requestQuery(), stk, proc)
	fl.reqs = reqs
	flight.serving = reqs.servingFunc()
	watcher := probes.NewWatcher(proc, probes.Options{
		Stack:        stk.take,
		Interval:     cfg.Interval,
		FastInterval: cfg.FastInterval,
		Warn:         func(msg string) { out.WarnOnce(msg, "proc_unreadable", msg) },
		Private:      wantPrivate(recyclePolicy(cfg, settings), &lastCg),
		Fast:         climb.fast,
		// The container's cgroup is sampled in the workers' sweep, and the sweep's events reach
		// the engine in one batch: an idle gwrap wakes once a second, and wakes the engine once.
		// The flight record (the engine's journal) takes the sweep's lines in one write.
		Sweep: func(_ time.Time, sample func()) {
			var swept *memwatch.Stats
			if cg != nil {
				ps.run(partCgroup, func() {
					fault(partCgroup)
					st := sampleCgroup(cg, out)
					lastCg = st
					climb.sample(st)
					fl.container(st)
					swept = &st
				})
			}
			batch = []probes.Event{}
			sample()
			eng.Sweep(swept, batch)
			batch = nil
		},
	})
	climb.wake = watcher.Wake
	// The engine holds Gunicorn's settings: it tells the watcher what to judge workers against,
	// and the outputs what to label their counts with.
	eng = engine.New(engine.Config{
		Settings:     settings,
		Thresholds:   cfg.Thresholds,
		Host:         postmortem.Host{Hostname: hostname, GwrapVersion: version, Instance: os.Getenv("WEBSITE_INSTANCE_ID")},
		Platform:     gunicorn.Platform(os.Environ()),
		Reports:      reports,
		Fate:         proc.Fate,
		Fates:        proc.Fates,
		CrashStack:   stk.crash,
		OnForget:     func(pid int) { stk.forget(pid, time.Now()) },
		OnLimits:     watcher.SetLimits,
		OnSettings:   fl.setSettings,
		OnMasterHint: func(pid int) { watcher.Hint(pid) },
		OnPanic:      func(p guard.Panic) { ps.panicked(p, true) },
		Follow:       func(pid int, on bool) { watcher.Follow(pid, on) },
		Recycle:      recyclePolicy(cfg, settings),
		Terminate:    func(id probes.ID, master int) error { return terminateWorker(proc, id, master) },
		Requests:     reqs.engineFunc(),
		History:      cfg.History,
		Interval:     cfg.Interval,
		Journal:      flight,
	}, fl)
	ectx, ecancel := context.WithCancel(context.Background())
	engineDone := make(chan struct{})
	go func() { eng.Run(ectx); close(engineDone) }()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The supervised command's pid: from the start, and again if a USR2 upgrade hands over to a
	// new master. The watcher finds the Gunicorn master at or below it.
	master := make(chan int, 4)
	upgrading := newPIDSet() // the new masters of a USR2 upgrade, as the watcher finds them
	var result supervisor.Result
	var runErr error
	var g group.Group
	var stopAt atomic.Int64 // when the first TERM, INT or QUIT came (Unix ns), for the disk's last wait

	// The child: its end ends everything else.
	g.Add(func() error {
		result, runErr = supervisor.Run(ctx, supervisor.Config{
			Argv: cfg.Command,
			Env:  stk.env(),
			// Gunicorn and its workers before gwrap when the container runs out of memory.
			ChildOOMScoreAdj: 500,
			StopBudget:       cfg.StopBudget,
			Signals:          sigs,
			ReapEvery:        5 * time.Second, // sigs carry SIGCHLD (subscribe)
			Upgrading:        upgrading.list,
			Warn:             func(code, msg string) { out.WarnOnce(code, code, msg) },
			OnStop:           func(pid int, stopped bool, sig syscall.Signal) { stoppedEvent(out, pid, stopped, sig) },
			OnStart: func(pid int) {
				eng.Started(pid)
				master <- pid
			},
			OnAdopt: func(pid int) {
				out.NewMaster(pid)
				select {
				case master <- pid:
				default:
				}
			},
			BeforeStop: func(sig os.Signal) {
				fl.stopping(cfg.terminationLogPath(fileExists), sig, cfg.StopBudget, time.Now())
			},
			OnSignal: func(sig os.Signal, forwarded bool) {
				if sig == syscall.SIGTERM || sig == syscall.SIGINT || sig == syscall.SIGQUIT {
					stopAt.CompareAndSwap(0, time.Now().UnixNano())
				}
				if s, ok := sig.(syscall.Signal); ok {
					eng.Signal(s, forwarded)
				}
			},
			OnLine: func(s supervisor.Stream, line []byte) { eng.Line(string(s), line) },
		})
		return errChildExited
	}, func(error) { cancel() })

	// The worker watcher follows the master: it starts when the command runs and starts over on
	// the new master after a USR2 upgrade.
	wctx, wcancel := context.WithCancel(ctx)
	g.Add(func() error {
		_, isGunicorn := gunicorn.CommandArgs(cfg.Command)
		emit := func(ev probes.Event) {
			fault(partWatcher)
			if ev.Kind == probes.EventBoot {
				stk.booted(int(fl.master.Load()))
			}
			switch {
			case ev.Kind == probes.EventMaster && ev.Parent != 0:
				upgrading.add(ev.ID.PID)
			case ev.Kind == probes.EventMasterGone:
				upgrading.remove(ev.ID.PID)
			case ev.Kind == probes.EventMaster:
				fl.master.Store(int64(ev.ID.PID))
				if ev.Evidence == probes.ByHint {
					out.WarnOnce("master-by-hint", "master_unconfirmed", fmt.Sprintf(
						"gwrap took process %d for the Gunicorn master on its command line or start line alone: its open files are closed to gwrap (another user, and no CAP_SYS_PTRACE), so heartbeats cannot be read either", ev.ID.PID))
				}
				if !isGunicorn {
					// The command is a launcher (a shell, python3 -c, a custom application, a
					// wrapper): Gunicorn's settings are those of the master it runs, learnt once
					// the watcher finds it.
					go ps.run(partSettings, func() {
						learnSettings(wctx, cfg, proc, stk, ev.ID.PID, out, eng.Settings)
					})
				}
			}
			reqs.sampled(ev) // the latest sample of each worker, for /status
			if batch != nil {
				batch = append(batch, ev)
				return
			}
			eng.Probe(ev)
		}
		// A panic of the watcher is said once; a new master (USR2) starts it over.
		run := func(ctx context.Context, pid int) (err error) {
			ps.try(partWatcher, func() { err = watcher.Run(ctx, pid, emit) })
			return err
		}
		watchMasters(wctx, master, run,
			func(err error) { out.WarnOnce("probes", "probes_stopped", "worker monitoring stopped: "+err.Error()) })
		return nil
	}, func(error) { wcancel() })

	if cg != nil {
		// OOM notifications.
		octx, ocancel := context.WithCancel(ctx)
		g.Add(func() error {
			ps.run(partOOM, func() {
				fault(partOOM)
				// The engine first: it reads /proc while the victim is still there to be seen dying.
				cg.WatchOOM(octx, func(ev memwatch.OOMEvent) {
					eng.OOM(ev)
					oomTotal.Store(max(oomTotal.Load(), ev.Total))
				}, func(msg string) { out.WarnOnce("oom", "oom_polled", msg) })
			})
			<-octx.Done() // a part that stopped early must not end the group, and the app with it
			return nil
		}, func(error) { ocancel() })
		// Memory notifications: a sweep at once when memory moves.
		nctx, ncancel := context.WithCancel(ctx)
		g.Add(func() error {
			ps.run(partNotify, func() {
				fault(partNotify)
				climb.run(nctx, cg, cgStats.Limit.V, func(msg string) { out.WarnOnce(msg, "memory_notify", msg) })
			})
			<-nctx.Done()
			return nil
		}, func(error) { ncancel() })
	}
	if cfg.MetricsAddr != "" {
		mctx, mcancel := context.WithCancel(ctx)
		g.Add(func() error {
			ps.run(partMetrics, func() { fl.serve(mctx, cfg.MetricsAddr) })
			<-mctx.Done()
			return nil
		}, func(error) { mcancel() })
	}

	_ = g.Run()

	// The producers have stopped: the engine takes what they left, decides what is open, and stops.
	code := result.ExitCode
	reason := result.Reason
	killed := result.Signal == syscall.SIGKILL && !result.Forced
	var oomLate uint64
	if cg != nil && killed {
		oomLate = oomSince(cg, oomTotal.Load())
	}
	if runErr != nil {
		reason = runErr.Error()
		if code == 0 {
			code = 1
		}
	}
	if runErr == nil {
		eng.ChildExit(engine.ExitInfo{Code: result.ExitCode, Reason: result.Reason, Forced: result.Forced, SIGKILL: killed, OOMKills: oomLate})
	}
	ecancel()
	<-engineDone
	if eng.MasterOOMKilled() {
		reason += " by the kernel's OOM killer"
	}
	reportsLost, flightLost := finishDisk(out, cfg, reports, flight, diskDeadline(stopAt.Load(), cfg.StopBudget, time.Now()))
	fl.terminate(cfg.terminationLogPath(fileExists), reason)
	out.Finish(func() {
		out.Exit(output.Exit{Code: code, Reason: reason, Incidents: eng.Reported(), DrainCut: result.DrainCut,
			ReportsUnwritten: reportsLost, FlightLinesUnwritten: flightLost})
	}, outputFlush, stderr)
	// A command that could not start is also said on stderr, where people look first.
	return code, runErr
}

// diskLast and diskLeast bound the wait for the report dir at exit (see defaultStopBudget):
// post-mortems and the flight record's close get what is left of the stop budget after the
// first TERM, INT or QUIT (or after the child ended on its own), plus diskLast, and at least
// diskLeast; then gwrap exits and counts what was not written.
const (
	diskLast  = 500 * time.Millisecond
	diskLeast = 200 * time.Millisecond
)

// diskDeadline is when gwrap stops waiting for the report dir: stopAt is the first stop
// signal's time in Unix ns (0: none came, the child ended on its own at now).
func diskDeadline(stopAt int64, budget time.Duration, now time.Time) time.Time {
	from := now
	if stopAt != 0 {
		from = time.Unix(0, stopAt)
	}
	return maxTime(from.Add(budget+diskLast), now.Add(diskLeast))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// finishDisk lets the report store and the flight record write what waits, until deadline, and
// returns how many post-mortems and flight-record lines were not written; when any were not,
// it says so once before gwrap.exit counts them.
func finishDisk(out *output.Writer, cfg config, reports *reportQueue, flight *flightQueue, deadline time.Time) (int, int) {
	flightLost := make(chan int, 1)
	go func() { flightLost <- flight.finish(deadline) }()
	r := reports.finish(deadline)
	f := <-flightLost
	unwrittenWarning(out, cfg.ReportDir, r, f)
	return r, f
}

// unwrittenWarning says how many post-mortems and flight-record lines were not written to dir.
func unwrittenWarning(out *output.Writer, dir string, r, f int) {
	if r > 0 || f > 0 {
		out.Warn("report_unwritten", fmt.Sprintf("%d post-mortems and %d flight-record lines were not written to %s before gwrap exited (the disk did not keep up, or failed as said above); the post-mortems are on stdout", r, f, dir),
			engine.Field{Key: "reports_unwritten", Value: r}, engine.Field{Key: "flight_lines_unwritten", Value: f})
	}
}

// procFS reads processes under root; the command lines of workers' children, which deep samples
// quote, are redacted as every other piece of the app's text in gwrap's output.
func procFS(root string) probes.FS { return probes.NewFS(root).RedactArgs(postmortem.RedactArgs) }

// sampleCgroup takes a sample of the container's cgroup; a file that cannot be read is said once.
func sampleCgroup(cg *memwatch.Cgroup, out *output.Writer) memwatch.Stats {
	st := cg.Sample()
	for _, m := range st.Missing {
		out.WarnOnce("cgroup-missing-"+m, "cgroup_missing", "cannot read the cgroup's "+m+"; that evidence will be missing")
	}
	return st
}

// watchMasters runs run on each master pid received, restarting it when a new one arrives,
// until ctx is done. A run that fails is reported and waits for the next master.
func watchMasters(ctx context.Context, masters <-chan int, run func(context.Context, int) error, report func(error)) {
	var pid int
	select {
	case pid = <-masters:
	case <-ctx.Done():
		return
	}
	for {
		rctx, rcancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func(pid int) { errc <- run(rctx, pid) }(pid)
		select {
		case pid = <-masters:
			rcancel()
			<-errc
			continue
		case err := <-errc:
			rcancel()
			if err != nil && ctx.Err() == nil {
				report(err)
			}
			select {
			case pid = <-masters:
				continue
			case <-ctx.Done():
				return
			}
		case <-ctx.Done():
			rcancel()
			<-errc
			return
		}
	}
}

var errChildExited = errors.New("child exited")

// readSettings gathers Gunicorn's effective settings when the command is Gunicorn; cancelling
// ctx (a TERM during start-up) ends the config file's evaluation.
func readSettings(ctx context.Context, cfg config) gunicorn.Settings {
	args, ok := gunicorn.CommandArgs(cfg.Command)
	if !ok {
		return gunicorn.ReadSettings(context.Background(), gunicorn.SettingsInput{})
	}
	python := cfg.Python
	if python == "" && cfg.EvalConfig {
		python = gunicorn.FindPython(cfg.Command)
	}
	if !cfg.EvalConfig {
		python = ""
	}
	dir, _ := os.Getwd()
	// An idle interpreter is stopped after 4 s; one still importing on a slow machine (software
	// emulation, a small CPU quota) may take up to 20 s, which its config file would cost
	// Gunicorn's own start as well: a timed-out evaluation would cost the verdicts the settings.
	ctx, cancel := context.WithTimeout(ctx, 21*time.Second)
	defer cancel()
	return gunicorn.ReadSettings(ctx, gunicorn.SettingsInput{Args: args, Env: os.Environ(), Dir: dir, Python: python,
		Timeout: 4 * time.Second, MaxTimeout: 20 * time.Second, ProcRoot: cfg.ProcRoot})
}

// learnSettings learns the settings of a Gunicorn master gwrap did not start as `gunicorn`
// itself: what the master reported of its own Config through the stack hook (the only source for
// a custom application, whose settings are set in Python), else what its command line says
// (masterSettings). It says once what keeps Gunicorn's lines from gwrap, or that the settings
// could not be learnt.
func learnSettings(ctx context.Context, cfg config, proc probes.FS, stk *stacks, pid int, out *output.Writer, use func(gunicorn.Settings)) {
	s, err := stk.reportedSettings(ctx, pid)
	if err != nil {
		var ok bool
		warn := func(msg string) { out.WarnOnce("settings-static", "settings_static", msg) }
		if s, ok = masterSettings(ctx, cfg, proc, pid, warn); !ok {
			out.WarnOnce("settings-unknown", "settings_unknown", fmt.Sprintf(
				"cannot learn the settings of the Gunicorn master %d: its command line is not Gunicorn's (a custom application sets them in Python) and it reported none (%v); gwrap assumes Gunicorn's defaults (timeout %d s) until its log says otherwise",
				pid, err, gunicorn.Defaults().Timeout))
			return
		}
	}
	for _, p := range s.Problems {
		out.WarnOnce("settings-problem-"+p, "settings_unknown", p)
	}
	for _, w := range gunicorn.BlindSpots(s) {
		out.Warn(w.Code, w.Message, engine.Field{Key: "fix", Value: w.Fix})
	}
	use(s)
}

// masterSettings reads the settings of a Gunicorn master from its argv, environment and working
// directory in /proc; ok is false when its argv is not Gunicorn's command line. Its config file
// is the app's: it is evaluated, and read, with the master's uid, gid and groups (from its
// status), never as gwrap's root; when gwrap cannot take on that identity, only the command line
// is read, and warn says so.
func masterSettings(ctx context.Context, cfg config, proc probes.FS, pid int, warn func(string)) (gunicorn.Settings, bool) {
	argv, env, dir, err := proc.Command(pid)
	if err != nil {
		return gunicorn.Settings{}, false
	}
	args, ok := gunicorn.CommandArgs(argv)
	if !ok {
		return gunicorn.Settings{}, false
	}
	as, err := asuser.Of(cfg.ProcRoot, pid)
	if err == nil && !as.Equal(asuser.Self()) && os.Geteuid() != 0 {
		err = fmt.Errorf("gwrap (uid %d) cannot act as %s", os.Geteuid(), as)
	}
	python := ""
	if err != nil {
		warn("Gunicorn's settings are read from its command line only, without running or reading its config file: " + err.Error())
	} else if cfg.EvalConfig {
		python = cfg.Python
		if python == "" {
			python = gunicorn.FindPython(argv)
		}
	}
	in := gunicorn.SettingsInput{Args: args, Env: env, Dir: dir, Python: python, Timeout: 4 * time.Second, As: &as}
	if err != nil {
		in.As, in.CommandLineOnly = nil, true
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return gunicorn.ReadSettings(ctx, in), true
}

// pidSet is a set of pids shared between goroutines.
type pidSet struct {
	mu   sync.Mutex
	pids map[int]bool
}

func newPIDSet() *pidSet { return &pidSet{pids: map[int]bool{}} }

func (p *pidSet) add(pid int)    { p.mu.Lock(); p.pids[pid] = true; p.mu.Unlock() }
func (p *pidSet) remove(pid int) { p.mu.Lock(); delete(p.pids, pid); p.mu.Unlock() }

func (p *pidSet) list() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]int, 0, len(p.pids))
	for pid := range p.pids {
		out = append(out, pid)
	}
	return out
}

func startEvent(out *output.Writer, cfg config, cg *memwatch.Cgroup, st memwatch.Stats, s gunicorn.Settings) {
	e := output.Start{Version: version, PID: os.Getpid(), Command: postmortem.RedactArgs(cfg.Command), ReportDir: cfg.ReportDir,
		Timeout: s.Timeout, Workers: s.Workers, WorkerClass: s.WorkerClass, HostCores: runtime.NumCPU(),
		Message: "gwrap " + version + " starting " + filepath.Base(cfg.Command[0])}
	if cg != nil {
		e.Cgroup = &output.StartCgroup{Version: cg.Version(), Path: cg.Path()}
		if st.Limit.Known {
			e.Cgroup.MemoryLimit = &st.Limit.V
		}
		if st.CPUQuota.Known {
			e.Cgroup.CPUQuota = &st.CPUQuota.V
		}
	}
	out.Start(e)
}

func lintAtStart(out *output.Writer, cfg config, cg *memwatch.Cgroup, st memwatch.Stats, s gunicorn.Settings) {
	if _, ok := gunicorn.CommandArgs(cfg.Command); ok {
		for _, w := range gunicorn.Lint(gunicorn.LintInput{Settings: s, Env: os.Environ(), CPUQuotaCores: st.CPUQuota.V,
			HostCores: runtime.NumCPU(), StopBudget: cfg.StopBudget}) {
			out.Warn(w.Code, w.Message, engine.Field{Key: "fix", Value: w.Fix})
		}
		for _, p := range s.Problems {
			out.Warn("settings_unknown", p)
		}
	}
	if cg != nil {
		for _, w := range memwatch.Warnings(st) {
			out.Warn("cgroup", w)
		}
	}
}

// oomSince reads how far the cgroup's oom_kill counter moved past seen. On cgroup v1 it moves as
// the victim is reaped, so by the time gwrap has reaped Gunicorn its own kill is counted.
func oomSince(cg *memwatch.Cgroup, seen uint64) uint64 {
	st := cg.Sample()
	if !st.OOMKill.Known || st.OOMKill.V <= seen {
		return 0
	}
	return st.OOMKill.V - seen
}
