package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/inflight"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// cpuWindow is the window over which gwrap status measures the workers' CPU share.
const cpuWindow = 500 * time.Millisecond

// maxStatusFiles bounds the request files gwrap status reads (the workers of one Gunicorn).
const maxStatusFiles = 1024

// runStatus is `gwrap status [--json] [--report-dir DIR]`: run beside the live gwrap (docker exec,
// kubectl exec), it finds it among the processes (the same executable as itself; with several,
// the one keeping its reports in DIR, found as gwrap report finds them), opens the hook's directory
// through the descriptor the live gwrap keeps on it (/proc/PID/fd/N), and prints each worker's
// requests in flight with their ages. The request files are the workers': each is read as
// inflight.ReadFile reads (bounded, no link followed, never blocking).
func runStatus(args []string, env func(string) (string, bool), stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("gwrap status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir, _ := env(envPrefix + "REPORT_DIR")
	fs.StringVar(&dir, "report-dir", dir, "the live gwrap's report dir (picks it among several)")
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() { fmt.Fprintln(stderr, "usage: gwrap status [--json] [--report-dir DIR]") }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil
		}
		return 2, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2, fmt.Errorf("%w: status takes no arguments", errUsage)
	}
	if dir == "" {
		dir = postmortem.DefaultDir(fileExists)
	}
	hookDir, err := findHookDir("/proc", dir)
	if err != nil {
		return 1, fmt.Errorf("status: %w", err)
	}
	proc := probes.NewFS("/proc")
	smp := proc.NewSampler()
	defer smp.Close()
	facts := func(id probes.ID) (probes.Sample, bool) {
		s, err := smp.Sample(id, time.Now())
		return s, err == nil
	}
	// A first read opens each worker's files and takes a sample without rates; the second,
	// cpuWindow later, has its CPU share over that window (as top shows it).
	if _, err := statusOfDir(hookDir, proc, monotonic(), inflight.QueryNames, facts); err != nil {
		return 1, fmt.Errorf("status: %w", err)
	}
	time.Sleep(cpuWindow)
	st, err := statusOfDir(hookDir, proc, monotonic(), inflight.QueryNames, facts)
	if err != nil {
		return 1, fmt.Errorf("status: %w", err)
	}
	if *asJSON {
		return 0, writeJSON(stdout, st)
	}
	return 0, writeStatus(stdout, st)
}

// findHookDir returns /proc/PID/fd/N: the hook directory a live gwrap (a process running the same
// executable as this one) holds open. With several, the one that holds reportDir open (its flight
// record's directory) is taken.
func findHookDir(proc, reportDir string) (string, error) {
	var self unix.Stat_t
	if err := unix.Stat(filepath.Join(proc, "self", "exe"), &self); err != nil {
		return "", fmt.Errorf("own executable: %w", err)
	}
	report, _ := os.Stat(reportDir)
	ents, err := os.ReadDir(proc)
	if err != nil {
		return "", err
	}
	me := os.Getpid()
	var found, matched []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == me {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(filepath.Join(proc, e.Name(), "exe"), &st) != nil || st.Dev != self.Dev || st.Ino != self.Ino {
			continue
		}
		fdDir := filepath.Join(proc, e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil || len(fds) > 4096 {
			continue
		}
		hook, holdsReports := "", false
		for _, fd := range fds {
			p := filepath.Join(fdDir, fd.Name())
			target, err := os.Readlink(p)
			if err != nil {
				continue
			}
			if strings.Contains(target, "/gwrap-pystack-") && strings.HasSuffix(target, "/stacks") {
				hook = p
			} else if report != nil && strings.HasPrefix(target, "/") {
				if fi, err := os.Stat(p); err == nil && os.SameFile(fi, report) {
					holdsReports = true
				}
			}
		}
		if hook == "" {
			continue
		}
		found = append(found, hook)
		if holdsReports {
			matched = append(matched, hook)
		}
	}
	switch {
	case len(matched) == 1:
		return matched[0], nil
	case len(found) == 1:
		return found[0], nil
	case len(found) == 0:
		return "", errors.New("no live gwrap recording requests found (is it running in this PID namespace, with --record-requests?)")
	}
	return "", fmt.Errorf("%d live gwraps record requests and none (or several) keeps its reports in %s: name its --report-dir", len(found), reportDir)
}

// statusOfDir reads the request file of every live process in dir (at most maxStatusFiles), the
// ages as of now (CLOCK_MONOTONIC), queries shown at most as mode says. With facts (a worker's
// hot sample), each worker's age, heartbeat age, memory and CPU are read too.
func statusOfDir(dir string, proc probes.FS, now time.Duration, mode inflight.QueryMode, facts func(probes.ID) (probes.Sample, bool)) (liveStatus, error) {
	d, err := os.Open(dir)
	if err != nil {
		return liveStatus{}, err
	}
	defer d.Close()
	names, err := d.Readdirnames(maxStatusFiles)
	if err != nil && !errors.Is(err, io.EOF) {
		return liveStatus{}, err
	}
	out := liveStatus{Schema: statusSchema, At: time.Now().UTC(), Workers: []workerStatus{}}
	for _, n := range names {
		pid, err := strconv.Atoi(strings.TrimSuffix(n, ".req"))
		if !strings.HasSuffix(n, ".req") || err != nil || pid <= 0 {
			continue
		}
		fate := proc.Fate(probes.ID{PID: pid})
		if fate.Gone {
			continue
		}
		t, err := inflight.ReadFile(filepath.Join(dir, n), mode)
		if err != nil || !t.Belongs(pid, fate.ID.StartTime) {
			continue
		}
		if out.Master == 0 {
			out.Master = fate.PPID
		}
		w := workerStatus{PID: pid, State: fate.State, Class: t.Class, Requests: []postmortem.Request{}, Unslotted: t.Unslotted, Served: t.Served}
		for _, r := range t.InFlight {
			w.Requests = append(w.Requests, request(r, now))
		}
		if t.Served > 0 { // the slot serving a request now still holds its previous one's duration
			s := t.LastDuration.Seconds()
			w.LastSeconds = &s
		}
		if facts != nil {
			w.figures(proc, fate.ID, facts)
		}
		out.Workers = append(out.Workers, w)
	}
	return out, nil
}

// figures fills in the worker's age, heartbeat age, memory and CPU: its hot sample's, its age and
// private memory read now. What cannot be read stays null.
func (w *workerStatus) figures(proc probes.FS, id probes.ID, facts func(probes.ID) (probes.Sample, bool)) {
	if age, err := proc.Age(id); err == nil {
		w.AgeSeconds = ptr(round3(age.Seconds()))
	}
	if uss, err := proc.Private(id); err == nil {
		w.PrivateBytes = &uss
	}
	s, ok := facts(id)
	if !ok {
		return
	}
	if s.HeartbeatAge >= 0 {
		w.HeartbeatAgeSeconds = ptr(round3((s.HeartbeatAge + max(0, time.Since(s.Time))).Seconds()))
	}
	if !slices.Contains(s.Missing, "status") {
		rss := s.RSS()
		w.RSSBytes = &rss
	}
	if !s.NoRates {
		w.CPUPercent = ptr(round3(s.CPUPercent()))
	}
}

func ptr[T any](v T) *T { return &v }

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// orDash formats v, or "-" when it is unknown.
func orDash(v *float64, format string) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf(format, *v)
}

// sizeMiB formats a byte count in MiB, or "-" when it is unknown.
func sizeMiB(v *uint64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(*v)/(1<<20))
}

// writeStatus prints the status for people: a line per worker, then its requests.
func writeStatus(w io.Writer, st liveStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "PID\tSTATE\tAGE\tHEARTBEAT\tRSS\tPRIVATE\tCPU\tCLASS\tIN FLIGHT\tSERVED\tLAST\n")
	for _, wk := range st.Workers {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", wk.PID, wk.State,
			orDash(wk.AgeSeconds, "%.0f s"), orDash(wk.HeartbeatAgeSeconds, "%.1f s"), sizeMiB(wk.RSSBytes), sizeMiB(wk.PrivateBytes),
			orDash(wk.CPUPercent, "%.0f %%"), wk.Class, len(wk.Requests)+wk.Unslotted, wk.Served, orDash(wk.LastSeconds, "%.3f s"))
		for _, r := range wk.Requests {
			fmt.Fprintf(tw, "\t\t\t\t\t\t\t\t  %s\n", r.Running()) // not a cell: it widens no column
		}
	}
	return tw.Flush()
}
