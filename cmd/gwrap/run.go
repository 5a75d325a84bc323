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
	"time"

	"github.com/rs/zerolog"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/internal/group"
	"github.com/gwrap/gwrap/memwatch"
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
	return supervise(cfg, stdout)
}

// supervise runs the child and everything that watches it, and returns the exit code.
func supervise(cfg config, stdout io.Writer) (int, error) {
	out := newOutput(stdout, cfg.LogFormat, time.Now)

	cg, cgErr := memwatch.Open(memwatch.Options{CgroupRoot: cfg.CgroupRoot, ProcRoot: cfg.ProcRoot, Path: cfg.CgroupPath})
	var cgStats memwatch.Stats
	if cgErr != nil {
		out.warnOnce("cgroup", "config.warning", "cannot read the container's cgroup, memory and OOM evidence will be missing: "+cgErr.Error())
	} else {
		cgStats = cg.Sample()
	}

	settings := readSettings(cfg)
	if cfg.ReportDir == "" {
		cfg.ReportDir = postmortem.DefaultDir(fileExists)
	}
	startEvent(out, cfg, cg, cgStats, settings)
	lintAtStart(out, cfg, cg, cgStats, settings)

	store := postmortem.NewStore(cfg.ReportDir, postmortem.Retention{MaxCount: cfg.ReportMaxCount, MaxBytes: cfg.ReportMaxBytes})
	watcher := probes.NewWatcher(probes.NewFS(cfg.ProcRoot), probes.Options{
		Interval:     cfg.Interval,
		FastInterval: cfg.FastInterval,
		Timeout:      time.Duration(settings.Timeout) * time.Second,
		WorkerClass:  workerClass(settings),
		History:      cfg.History,
		Warn:         func(msg string) { out.warnOnce(msg, "config.warning", msg) },
	})
	loop := newLoop(cfg, out, store, watcher, cg, settings)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The master's pid: from the start, and again if a USR2 upgrade hands over to a new master.
	master := make(chan int, 4)
	var result supervisor.Result
	var runErr error
	var g group.Group

	// The child: its end ends everything else.
	g.Add(func() error {
		result, runErr = supervisor.Run(ctx, supervisor.Config{
			Argv:       cfg.Command,
			StopBudget: cfg.StopBudget,
			OnStart:    func(pid int) { master <- pid },
			OnAdopt: func(pid int) {
				out.event(zerolog.WarnLevel, "gunicorn.new_master").Int("pid", pid).
					Msg(fmt.Sprintf("the old Gunicorn master exited after USR2; gwrap now follows the new master %d", pid))
				select {
				case master <- pid:
				default:
				}
			},
			OnSignal: loop.signal,
			OnLine:   loop.line,
		})
		return errChildExited
	}, func(error) { cancel() })

	// The worker watcher follows the master: it starts when the master runs and starts over on
	// the new master after a USR2 upgrade.
	wctx, wcancel := context.WithCancel(ctx)
	g.Add(func() error {
		watchMasters(wctx, master, func(ctx context.Context, pid int) error { return watcher.Run(ctx, pid, loop.probe) },
			func(err error) { out.warnOnce("probes", "config.warning", "worker monitoring stopped: "+err.Error()) })
		return nil
	}, func(error) { wcancel() })

	// OOM notifications.
	if cg != nil {
		octx, ocancel := context.WithCancel(ctx)
		g.Add(func() error {
			cg.WatchOOM(octx, loop.oom, func(msg string) { out.warnOnce("oom", "config.warning", msg) })
			return nil
		}, func(error) { ocancel() })
	}

	// The event loop owns the correlator and the report store.
	lctx, lcancel := context.WithCancel(context.Background())
	g.Add(func() error { loop.run(lctx); return nil }, func(error) { lcancel() })

	_ = g.Run()

	code := result.ExitCode
	reason := result.Reason
	if runErr != nil {
		reason = runErr.Error()
		if code == 0 {
			code = 1
		}
	}
	out.event(exitLevel(code), "gwrap.exit").Int("exit_code", code).Str("reason", reason).
		Int("incidents", loop.incidents).Msg("gwrap exits: " + reason)
	// A command that could not start is also said on stderr, where people look first.
	return code, runErr
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

func exitLevel(code int) zerolog.Level {
	if code == 0 {
		return zerolog.InfoLevel
	}
	return zerolog.ErrorLevel
}

// readSettings gathers Gunicorn's effective settings when the command is Gunicorn.
func readSettings(cfg config) gunicorn.Settings {
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
	ctx, cancel := context.WithTimeout(context.Background(), 21*time.Second)
	defer cancel()
	return gunicorn.ReadSettings(ctx, gunicorn.SettingsInput{Args: args, Env: os.Environ(), Dir: dir, Python: python,
		Timeout: 4 * time.Second, MaxTimeout: 20 * time.Second, ProcRoot: cfg.ProcRoot})
}

func startEvent(out *output, cfg config, cg *memwatch.Cgroup, st memwatch.Stats, s gunicorn.Settings) {
	e := out.event(zerolog.InfoLevel, "gwrap.start").Str("version", version).Int("gwrap_pid", os.Getpid()).
		Strs("command", postmortem.RedactArgs(cfg.Command)).Str("report_dir", cfg.ReportDir).
		Int("timeout_s", s.Timeout).Int("workers", s.Workers).Str("worker_class", s.WorkerClass).
		Int("host_cores", runtime.NumCPU())
	if cg != nil {
		e = e.Int("cgroup_version", cg.Version()).Str("cgroup", cg.Path())
		if st.Limit.Known {
			e = e.Uint64("memory_limit_bytes", st.Limit.V)
		}
		if st.CPUQuotaCores > 0 {
			e = e.Float64("cpu_quota_cores", st.CPUQuotaCores)
		}
	}
	e.Msg("gwrap " + version + " starting " + filepath.Base(cfg.Command[0]))
}

func lintAtStart(out *output, cfg config, cg *memwatch.Cgroup, st memwatch.Stats, s gunicorn.Settings) {
	if _, ok := gunicorn.CommandArgs(cfg.Command); ok {
		for _, w := range gunicorn.Lint(gunicorn.LintInput{Settings: s, Env: os.Environ(), CPUQuotaCores: st.CPUQuotaCores,
			HostCores: runtime.NumCPU(), StopBudget: cfg.StopBudget}) {
			out.event(zerolog.WarnLevel, "config.warning").Str("code", w.Code).Str("fix", w.Fix).Msg(w.Message)
		}
		for _, p := range s.Problems {
			out.event(zerolog.WarnLevel, "config.warning").Str("code", "settings_unknown").Msg(p)
		}
	}
	if cg != nil {
		for _, w := range memwatch.Warnings(st) {
			out.event(zerolog.WarnLevel, "config.warning").Str("code", "cgroup").Msg(w)
		}
	}
}

// workerClass is the class that decides a worker's heartbeat rhythm: sync with threads is gthread.
func workerClass(s gunicorn.Settings) string {
	if (s.WorkerClass == "sync" || s.WorkerClass == "") && s.Threads > 1 {
		return "gthread"
	}
	return s.WorkerClass
}
