package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gwrap/gwrap/postmortem"
)

// errUsage marks a bad use of gwrap itself: exit code 2, nothing started.
var errUsage = errors.New("usage")

// defaultStopBudget is how long gwrap lets Gunicorn stop after forwarding TERM/INT/QUIT before it
// SIGKILLs the whole process group. The arithmetic, for the tightest common window:
//
//	docker stop:  TERM, then SIGKILL after 10 s
//	  8 s  Gunicorn's graceful stop (workers finish their requests)
//	+ 1 s  SIGKILL of the group, reap, drain the pipes
//	+ 1 s  flush pending post-mortems and the last JSON lines
//	= 10 s
//
// Kubernetes' default terminationGracePeriodSeconds is 30 s, Cloud Run's 10 s, ECS's stopTimeout
// 30 s: 8 s fits all. Gunicorn's own graceful_timeout defaults to 30 s, so gwrap warns at start-up
// when it is longer than the budget (workers would be killed mid-request without a line).
const defaultStopBudget = 8 * time.Second

// config is every setting of a gwrap run, from flags and GWRAP_* variables (flags win).
type config struct {
	LogFormat  string        // json or text
	ReportDir  string        // where post-mortems go
	StopBudget time.Duration // see defaultStopBudget

	Interval     time.Duration // hot sampling period
	FastInterval time.Duration // sampling period of a late worker
	History      time.Duration // per-worker history kept for a report

	ProcRoot   string // /proc
	CgroupRoot string // /sys/fs/cgroup
	CgroupPath string // override of the container's cgroup path

	Python     string // interpreter that evaluates Gunicorn's config ("" = find it)
	EvalConfig bool   // evaluate the config file with Python (else: static read)

	PythonStacks bool // take a late or crashed worker's Python stack (package pystack)

	Thresholds postmortem.Thresholds

	ReportMaxCount int
	ReportMaxBytes int64

	Command []string // the child: normally gunicorn and its arguments
}

// envPrefix is the prefix of every environment variable gwrap reads.
const envPrefix = "GWRAP_"

// parseConfig reads flags from args (without the program name) and GWRAP_* variables from env.
// It returns errUsage-wrapped errors for bad input; flag.ErrHelp for -h.
func parseConfig(args []string, env func(string) (string, bool), stderr io.Writer) (config, error) {
	c := config{
		LogFormat:      "json",
		StopBudget:     defaultStopBudget,
		Interval:       time.Second,
		FastInterval:   100 * time.Millisecond,
		History:        5 * time.Minute,
		ProcRoot:       "/proc",
		CgroupRoot:     "/sys/fs/cgroup",
		EvalConfig:     true,
		PythonStacks:   true,
		Thresholds:     postmortem.DefaultThresholds(),
		ReportMaxCount: 200,
		ReportMaxBytes: 100 << 20,
	}
	fs := flag.NewFlagSet("gwrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageText) }

	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "")
	fs.StringVar(&c.ReportDir, "report-dir", c.ReportDir, "")
	fs.DurationVar(&c.StopBudget, "stop-budget", c.StopBudget, "")
	fs.DurationVar(&c.Interval, "interval", c.Interval, "")
	fs.DurationVar(&c.FastInterval, "fast-interval", c.FastInterval, "")
	fs.DurationVar(&c.History, "history", c.History, "")
	fs.StringVar(&c.ProcRoot, "proc-root", c.ProcRoot, "")
	fs.StringVar(&c.CgroupRoot, "cgroup-root", c.CgroupRoot, "")
	fs.StringVar(&c.CgroupPath, "cgroup", c.CgroupPath, "")
	fs.StringVar(&c.Python, "python", c.Python, "")
	fs.BoolVar(&c.EvalConfig, "eval-config", c.EvalConfig, "")
	fs.BoolVar(&c.PythonStacks, "python-stacks", c.PythonStacks, "")
	fs.Float64Var(&c.Thresholds.NearLimit, "near-limit", c.Thresholds.NearLimit, "")
	fs.Float64Var(&c.Thresholds.MemoryPSI, "memory-psi", c.Thresholds.MemoryPSI, "")
	fs.Float64Var(&c.Thresholds.CPUBound, "cpu-bound", c.Thresholds.CPUBound, "")
	fs.Float64Var(&c.Thresholds.RunDelay, "run-delay", c.Thresholds.RunDelay, "")
	fs.Float64Var(&c.Thresholds.LongShare, "long-share", c.Thresholds.LongShare, "")
	fs.DurationVar(&c.Thresholds.FollowUpWindow, "follow-up", c.Thresholds.FollowUpWindow, "")
	fs.IntVar(&c.ReportMaxCount, "report-max-count", c.ReportMaxCount, "")
	fs.Int64Var(&c.ReportMaxBytes, "report-max-bytes", c.ReportMaxBytes, "")

	// Environment first, so that flags given on the command line win.
	var envErrs []string
	fs.VisitAll(func(f *flag.Flag) {
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := env(name); ok {
			if err := f.Value.Set(v); err != nil {
				envErrs = append(envErrs, fmt.Sprintf("%s=%q: %v", name, v, err))
			}
		}
	})
	if len(envErrs) > 0 {
		return c, fmt.Errorf("%w: bad environment: %s", errUsage, strings.Join(envErrs, "; "))
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, fmt.Errorf("%w: %v", errUsage, err)
	}
	c.Command = fs.Args()
	return c, c.validate()
}

func (c config) validate() error {
	var bad []string
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad = append(bad, fmt.Sprintf("--log-format %q: want json or text", c.LogFormat))
	}
	if c.StopBudget <= 0 {
		bad = append(bad, "--stop-budget must be positive")
	}
	if c.Interval < 10*time.Millisecond {
		bad = append(bad, "--interval must be at least 10ms")
	}
	if c.FastInterval < 10*time.Millisecond || c.FastInterval > c.Interval {
		bad = append(bad, "--fast-interval must be between 10ms and --interval")
	}
	if c.History < c.Interval {
		bad = append(bad, "--history must be at least --interval")
	}
	if c.Thresholds.NearLimit <= 0 || c.Thresholds.NearLimit > 1 {
		bad = append(bad, "--near-limit must be in (0, 1]")
	}
	if c.Thresholds.LongShare <= 0 || c.Thresholds.LongShare > 1 {
		bad = append(bad, "--long-share must be in (0, 1]")
	}
	for name, v := range map[string]float64{"--cpu-bound": c.Thresholds.CPUBound, "--run-delay": c.Thresholds.RunDelay, "--memory-psi": c.Thresholds.MemoryPSI} {
		if v <= 0 || v > 100 {
			bad = append(bad, name+" must be a percentage in (0, 100]")
		}
	}
	if c.Thresholds.FollowUpWindow <= 0 {
		bad = append(bad, "--follow-up must be positive")
	}
	if c.ReportMaxCount < 1 || c.ReportMaxBytes < 1 {
		bad = append(bad, "--report-max-count and --report-max-bytes must be positive")
	}
	if len(c.Command) == 0 {
		bad = append(bad, "no command to run (gwrap [flags] [--] gunicorn APP)")
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", errUsage, strings.Join(bad, "; "))
	}
	return nil
}

// fileExists is the one place that asks the real filesystem whether a path exists.
func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
