package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gwrap/gwrap/inflight"
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
	// RecordRequests: the hook records each worker's requests (package inflight), with query
	// strings kept as RequestQuery says (full, names, off).
	RecordRequests bool
	RequestQuery   string

	Thresholds postmortem.Thresholds

	// Recycling (off unless one is set): the container's working set as a percentage of its
	// limit (--recycle-at), one worker's private memory in bytes (--recycle-worker-memory).
	RecycleAt           float64
	RecycleWorkerMemory size

	ReportMaxCount int
	ReportMaxBytes int64

	MetricsAddr    string // --metrics-addr: serve /metrics here ("" = off)
	TerminationLog string // --termination-log: "" = Kubernetes' file when it exists, "off" = none

	Command []string // the child: normally gunicorn and its arguments

	Warnings []string // things to say once the output exists: unknown GWRAP_* variables
}

// Bounds of every duration and count a user can give: beyond them gwrap would run out of memory
// (a history of a million hours), wait forever, or keep more reports than a disk holds.
const (
	maxStopBudget   = time.Hour
	maxInterval     = time.Minute
	maxHistory      = time.Hour
	maxSamples      = 3600 // --history / --interval: samples kept per worker
	maxFollowUp     = time.Minute
	maxReportCount  = 100000
	maxReportBytes  = 16 << 30
	minSampling     = 10 * time.Millisecond
	maxUnknownNames = 5 // unknown GWRAP_* variables named in warnings
)

// otherEnv are GWRAP_* variables that are not flags but are known: read by gwrap for developers,
// by entrypoint.sh, or by the test suite.
var otherEnv = []string{"GWRAP_CPUPROFILE", "GWRAP_DEFAULTS", "GWRAP_BIN", "GWRAP_STRICT", "GWRAP_HELPER", "GWRAP_SCREENSHOT"}

// environ is the process environment, for the unknown-variable check (a seam for tests).
var environ = os.Environ

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
		RecordRequests: true,
		RequestQuery:   "names",
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
	fs.BoolVar(&c.RecordRequests, "record-requests", c.RecordRequests, "")
	fs.StringVar(&c.RequestQuery, "request-query", c.RequestQuery, "")
	fs.Float64Var(&c.Thresholds.NearLimit, "near-limit", c.Thresholds.NearLimit, "")
	fs.Float64Var(&c.Thresholds.MemoryPSI, "memory-psi", c.Thresholds.MemoryPSI, "")
	fs.Float64Var(&c.Thresholds.CPUBound, "cpu-bound", c.Thresholds.CPUBound, "")
	fs.Float64Var(&c.Thresholds.RunDelay, "run-delay", c.Thresholds.RunDelay, "")
	fs.Float64Var(&c.Thresholds.LongShare, "long-share", c.Thresholds.LongShare, "")
	fs.DurationVar(&c.Thresholds.FollowUpWindow, "follow-up", c.Thresholds.FollowUpWindow, "")
	fs.Float64Var(&c.RecycleAt, "recycle-at", c.RecycleAt, "")
	fs.Var(&c.RecycleWorkerMemory, "recycle-worker-memory", "")
	fs.IntVar(&c.ReportMaxCount, "report-max-count", c.ReportMaxCount, "")
	fs.Int64Var(&c.ReportMaxBytes, "report-max-bytes", c.ReportMaxBytes, "")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, "")
	fs.StringVar(&c.TerminationLog, "termination-log", c.TerminationLog, "")

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
	var known []string
	fs.VisitAll(func(f *flag.Flag) {
		known = append(known, envPrefix+strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_")))
	})
	c.Warnings = unknownEnv(environ(), append(known, otherEnv...))
	return c, c.validate()
}

func (c config) validate() error {
	var bad []string
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad = append(bad, fmt.Sprintf("--log-format %q: want json or text", c.LogFormat))
	}
	if c.StopBudget <= 0 || c.StopBudget > maxStopBudget {
		bad = append(bad, fmt.Sprintf("--stop-budget %v: must be positive and at most %v", c.StopBudget, maxStopBudget))
	}
	if c.Interval < minSampling || c.Interval > maxInterval {
		bad = append(bad, fmt.Sprintf("--interval %v: must be between %v and %v", c.Interval, minSampling, maxInterval))
	}
	if c.FastInterval < minSampling || c.FastInterval > c.Interval {
		bad = append(bad, fmt.Sprintf("--fast-interval %v: must be between %v and --interval", c.FastInterval, minSampling))
	}
	switch {
	case c.History < c.Interval || c.History > maxHistory:
		bad = append(bad, fmt.Sprintf("--history %v: must be between --interval and %v", c.History, maxHistory))
	case c.Interval > 0 && c.History/c.Interval > maxSamples:
		bad = append(bad, fmt.Sprintf("--history %v at --interval %v keeps %d samples per worker, more than %d: shorten it or sample less often",
			c.History, c.Interval, c.History/c.Interval, maxSamples))
	}
	for _, f := range []struct {
		name     string
		v        float64
		min, max float64 // (min, max]
		what     string
	}{
		{"--near-limit", c.Thresholds.NearLimit, 0, 1, "a fraction in (0, 1]"},
		{"--long-share", c.Thresholds.LongShare, 0, 1, "a fraction in (0, 1]"},
		{"--cpu-bound", c.Thresholds.CPUBound, 0, 100, "a percentage in (0, 100]"},
		{"--run-delay", c.Thresholds.RunDelay, 0, 100, "a percentage in (0, 100]"},
		{"--memory-psi", c.Thresholds.MemoryPSI, 0, 100, "a percentage in (0, 100]"},
	} {
		// NaN compares false with everything: test it (and the infinities) by name.
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v <= f.min || f.v > f.max {
			bad = append(bad, fmt.Sprintf("%s %v: must be %s", f.name, f.v, f.what))
		}
	}
	if math.IsNaN(c.RecycleAt) || c.RecycleAt < 0 || c.RecycleAt > 100 {
		bad = append(bad, fmt.Sprintf("--recycle-at %v: must be a percentage in (0, 100], or 0 for off", c.RecycleAt))
	}
	if c.Thresholds.FollowUpWindow <= 0 || c.Thresholds.FollowUpWindow > maxFollowUp {
		bad = append(bad, fmt.Sprintf("--follow-up %v: must be positive and at most %v", c.Thresholds.FollowUpWindow, maxFollowUp))
	}
	if c.ReportMaxCount < 1 || c.ReportMaxCount > maxReportCount {
		bad = append(bad, fmt.Sprintf("--report-max-count %d: must be between 1 and %d", c.ReportMaxCount, maxReportCount))
	}
	if c.ReportMaxBytes < 1 || c.ReportMaxBytes > maxReportBytes {
		bad = append(bad, fmt.Sprintf("--report-max-bytes %d: must be between 1 and %d", c.ReportMaxBytes, int64(maxReportBytes)))
	}
	if _, err := inflight.ParseQueryMode(c.RequestQuery); err != nil {
		bad = append(bad, fmt.Sprintf("--request-query %q: want %s", c.RequestQuery, inflight.QueryModes))
	}
	if c.MetricsAddr != "" {
		if _, port, err := net.SplitHostPort(c.MetricsAddr); err != nil || port == "" {
			bad = append(bad, fmt.Sprintf("--metrics-addr %q: want HOST:PORT or :PORT", c.MetricsAddr))
		}
	}
	if len(c.Command) == 0 {
		bad = append(bad, "no command to run (gwrap [flags] [--] gunicorn APP)")
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", errUsage, strings.Join(bad, "; "))
	}
	return nil
}

// unknownEnv returns one warning per GWRAP_* variable of env that is not in known, naming the
// closest known one: a misspelled setting must not be silently ignored.
func unknownEnv(env, known []string) []string {
	isKnown := map[string]bool{}
	for _, k := range known {
		isKnown[k] = true
	}
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) || isKnown[name] {
			continue
		}
		if len(out) == maxUnknownNames {
			out = append(out, "more unknown GWRAP_* variables are set; they are ignored as well")
			break
		}
		best, bestD := "", -1
		for _, k := range known {
			if d := editDistance(name, k); bestD < 0 || d < bestD {
				best, bestD = k, d
			}
		}
		out = append(out, fmt.Sprintf("%s is not a gwrap setting and is ignored; did you mean %s?", name, best))
	}
	return out
}

// editDistance is the Levenshtein distance of two short ASCII names.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// kubeTerminationLog is where Kubernetes mounts a container's termination message by default
// (terminationMessagePath).
const kubeTerminationLog = "/dev/termination-log"

// terminationLogPath is where gwrap writes its termination message: --termination-log, else
// Kubernetes' file when it exists; "" when there is none or it is "off".
func (c config) terminationLogPath(exists func(string) bool) string {
	switch {
	case c.TerminationLog == "off":
		return ""
	case c.TerminationLog != "":
		return c.TerminationLog
	case exists(kubeTerminationLog):
		return kubeTerminationLog
	}
	return ""
}

// requestQuery is the query mode requests are recorded and shown with.
func (c config) requestQuery() inflight.QueryMode {
	m, _ := inflight.ParseQueryMode(c.RequestQuery) // validated
	return m
}

// hookRequests is pystack.Options.Requests: the query mode when requests are recorded, else "".
func (c config) hookRequests() string {
	if !c.RecordRequests {
		return ""
	}
	return c.RequestQuery
}

// fileExists is the one place that asks the real filesystem whether a path exists.
func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// size is a flag's byte count: a number of bytes, or one with a unit (K, M, G, T, with or
// without "i" and "B", all powers of 1024: 512M, 512MiB, 1.5G). 0 is off.
type size uint64

func (s *size) String() string { return strconv.FormatUint(uint64(*s), 10) }

func (s *size) Set(v string) error {
	t := strings.TrimSpace(v)
	num := strings.TrimRight(t, "KMGTkmgtiIbB")
	unit := strings.ToUpper(strings.TrimSpace(t[len(num):]))
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
	sh, ok := shift[unit]
	f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if !ok || err != nil || math.IsNaN(f) || f < 0 || f*float64(uint64(1)<<sh) >= 1<<62 {
		return fmt.Errorf("want a size such as 512MiB, 1G or a number of bytes")
	}
	*s = size(f * float64(uint64(1)<<sh))
	return nil
}
