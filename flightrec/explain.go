package flightrec

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gwrap/gwrap/internal/safedir"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// endWindow is how far before the record's last line "at the end" reaches: an OOM counter that
// moved in it, or a working set at the limit in it, is what the death followed.
const endWindow = 15 * time.Second

// surge is the least rise of the working set in the end window (or a quarter of the limit, if
// more) that, with memory.oom.group set, reads as the growth an OOM kill of the whole container
// cut short.
const surge = 64 << 20

// Recover reads host's previous record in dir and, when that run died without closing it,
// explains it (Explain); now is this start. It returns nil when there is nothing to explain, and
// when a live gwrap with the same host name holds the record (it is not dead, only sharing the dir).
func Recover(dir, host string, now time.Time, th postmortem.Thresholds) (*postmortem.Report, error) {
	d, err := safedir.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the flight record: %w", err)
	}
	defer d.Close()
	lf, busy, lerr := lock(d, filepath.Base(lockName(dir, host)))
	if busy {
		return nil, nil
	}
	if lerr == nil && lf != nil {
		defer lf.Close()
	}
	rec, err := previous(d, host)
	if rec == nil || rec.Closed {
		return nil, err
	}
	r := Explain(rec, now, th)
	return &r, err
}

// finding is what the record shows at its end.
type finding struct {
	last      *memwatch.Stats // the last cgroup sample
	wsMax     uint64          // largest working set (usage when unknown) in the end window
	limit     uint64          // 0 unknown / none
	oomGroup  bool
	oomDelta  uint64 // the oom_kill counter's increase in the end window (or notifications)
	oomKnown  bool
	term      *Signal // the last stop signal received
	victim    probes.ID
	workers   []probes.ID // alive at the end, largest memory first
	lastSeen  map[probes.ID]probes.Sample
	sinceLast time.Duration // from the last line to this start

	// The working set's rise in the end window: from its lowest (the last sample still there,
	// riseFrom) to the last sample (wsLast, at riseTo). A container growing fast at the end.
	rise, wsLast     uint64
	riseFrom, riseTo time.Time
}

func (rec *Record) find(now time.Time) finding {
	f := finding{lastSeen: map[probes.ID]probes.Sample{}, sinceLast: now.Sub(rec.Last)}
	from := rec.Last.Add(-endWindow)
	var first, low *uint64
	var window []memwatch.Stats // the end window's samples with a working set (or usage)
	for i := range rec.Container {
		st := &rec.Container[i]
		f.last = st
		if st.OOMGroup.Known && st.OOMGroup.V == 1 {
			f.oomGroup = true
		}
		if st.Limit.Known {
			f.limit = st.Limit.V
		}
		if st.OOMKill.Known {
			f.oomKnown = true
			if st.Time.Before(from) || first == nil {
				v := st.OOMKill.V
				first = &v
			} else if st.OOMKill.V > *first {
				f.oomDelta = st.OOMKill.V - *first
			}
		}
		if st.Time.Before(from) {
			continue
		}
		ws := st.WorkingSet
		if !ws.Known {
			ws = st.Usage
		}
		if !ws.Known {
			continue
		}
		f.wsMax = max(f.wsMax, ws.V)
		window = append(window, *st)
		if low == nil || ws.V < *low {
			v := ws.V
			low = &v
		}
		f.rise, f.wsLast, f.riseTo = ws.V-*low, ws.V, st.Time
	}
	// The rise began after the last sample still at its lowest (within a fiftieth of the rise,
	// or 1 MiB).
	for _, st := range window {
		ws := st.WorkingSet
		if !ws.Known {
			ws = st.Usage
		}
		if ws.V <= *low+max(f.rise/50, 1<<20) {
			f.riseFrom = st.Time
		}
	}
	var notified uint64
	for _, o := range rec.OOMs {
		if !o.Time.Before(from) {
			notified += o.Count
		}
	}
	f.oomDelta = max(f.oomDelta, notified)
	for i := range rec.Signals {
		switch rec.Signals[i].Name {
		case "terminated", "interrupt", "quit":
			f.term = &rec.Signals[i]
		}
	}
	for id, ss := range rec.Workers {
		if len(ss) > 0 && !ss[len(ss)-1].Time.Before(from) {
			f.workers = append(f.workers, id)
			f.lastSeen[id] = ss[len(ss)-1]
		}
	}
	sort.Slice(f.workers, func(i, j int) bool {
		a, b := f.lastSeen[f.workers[i]].RSS(), f.lastSeen[f.workers[j]].RSS()
		if a != b {
			return a > b
		}
		return f.workers[i].PID < f.workers[j].PID
	})
	if len(f.workers) > 0 {
		f.victim = f.workers[0]
	} else { // no worker alive at the end: the largest one the record has
		for id, ss := range rec.Workers {
			if n := len(ss); n > 0 && (f.victim.PID == 0 || ss[n-1].RSS() > rec.Workers[f.victim][len(rec.Workers[f.victim])-1].RSS()) {
				f.victim = id
			}
		}
	}
	return f
}

// Explain is the post-mortem of the run that wrote rec and died without closing it; now is this
// start: the death happened between rec.Last and now. It is the one place that maps a record to
// the report types.
func Explain(rec *Record, now time.Time, th postmortem.Thresholds) postmortem.Report {
	f := rec.find(now)
	id := rec.Identity
	at := rec.Last
	v := postmortem.Verdict{Evidence: []postmortem.Fact{}, Advice: []string{}}
	fact := func(name, val, thr string) {
		v.Evidence = append(v.Evidence, postmortem.Fact{Fact: name, Value: val, Threshold: thr})
	}

	bound := fmt.Sprintf("between %s (its last record) and this start at %s, %s later", at.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), secs(f.sinceLast))
	fact("gwrap's previous run", fmt.Sprintf("pid %d, version %s, started %s", id.PID, id.Version, id.Start.UTC().Format(time.RFC3339)), "")
	fact("it died", bound, "")
	fact("its flight record was closed", "no (gwrap never exited on its own)", "")

	frac := 0.0
	if f.limit > 0 {
		frac = float64(f.wsMax) / float64(f.limit)
		fact("container working set at its peak in the last 15 s", fmt.Sprintf("%s of %s (%.0f%%)", mib(f.wsMax), mib(f.limit), 100*frac), fmt.Sprintf("near at ≥ %.0f%%", 100*th.NearLimit))
	} else if f.last != nil {
		fact("container memory limit", "none set", "")
	} else {
		v.Missing = append(v.Missing, "container samples in the flight record")
	}
	atLimit := f.limit > 0 && frac >= th.NearLimit
	v.NearMemoryLimit = atLimit
	if f.oomGroup {
		fact("memory.oom.group", "1 (one OOM kill kills every process of the container)", "")
	}
	if f.oomKnown || f.oomDelta > 0 {
		fact("cgroup oom_kill counter moved in the last 15 s by", fmt.Sprint(f.oomDelta), "")
	} else {
		v.Missing = append(v.Missing, "the cgroup's oom_kill counter")
	}
	for _, w := range f.workers {
		s := f.lastSeen[w]
		fact(fmt.Sprintf("worker %d's last sample", w.PID), fmt.Sprintf("%s resident, %.0f%% CPU, state %s at %s", mib(s.RSS()), s.CPUPercent(), s.State, s.Time.UTC().Format("15:04:05")), "")
	}
	if len(rec.Workers) == 0 {
		v.Missing = append(v.Missing, "worker samples in the flight record")
	}
	if f.term != nil {
		fact("gwrap received", fmt.Sprintf("%s at %s (%s before its last record; stop budget %s)", sigName(f.term.Name), f.term.Time.UTC().Format(time.RFC3339), secs(at.Sub(f.term.Time)), secs(rec.StopBudget)), "")
	}

	inc := postmortem.Incident{Kind: postmortem.KindPreviousRun, PID: id.PID, At: at, OOMKillDelta: f.oomDelta}
	if f.victim.PID != 0 {
		inc.PID, inc.StartTime = f.victim.PID, f.victim.StartTime
	}
	for _, l := range lastLines(rec.Lines, 20) {
		inc.Lines = append(inc.Lines, postmortem.Redact(l.Text)) // as the engine's reports quote them
	}

	switch {
	case f.oomDelta > 0 || (f.oomGroup && atLimit):
		v.Cause = postmortem.CauseOOMKilled
		v.NearMemoryLimit = true
		inc.Signal = "SIGKILL"
		why := fmt.Sprintf("the cgroup's oom_kill counter moved by %d at the end", f.oomDelta)
		if f.oomDelta == 0 {
			why = fmt.Sprintf("its working set was at the memory limit (%s of %s) with memory.oom.group set", mib(f.wsMax), mib(f.limit))
		} else if f.oomGroup {
			why += " with memory.oom.group set"
		}
		v.Summary = fmt.Sprintf("The whole container, gwrap included, was killed by the kernel's OOM killer %s: %s, so one OOM kill took every process.", bound, why)
		if f.victim.PID != 0 {
			v.Summary = also(v.Summary, fmt.Sprintf("the largest worker was %d with %s resident at its last sample", f.victim.PID, mib(f.lastSeen[f.victim].RSS())))
		}
		v.Confidence = "high"
		if f.oomDelta == 0 {
			v.Confidence = "medium"
		}
		v.Advice = oomAdvice(f.oomGroup)
	case f.term == nil && f.oomGroup && f.limit > 0 && f.rise >= max(surge, f.limit/4):
		// memory.oom.group makes the kernel kill every process at the first OOM kill, gwrap too,
		// so the record ends at its last sample before the kill: a working set rising fast there
		// with no stop signal is what such a death leaves; the rise to the limit itself was not
		// sampled, hence medium confidence.
		v.Cause = postmortem.CauseOOMKilled
		v.NearMemoryLimit = true
		inc.Signal = "SIGKILL"
		rising := fmt.Sprintf("up %s in %s to %s of its %s limit", mib(f.rise), secs(f.riseTo.Sub(f.riseFrom)), mib(f.wsLast), mib(f.limit))
		fact("container working set rising at the end", rising, fmt.Sprintf("marked at +%s or a quarter of the limit", mib(surge)))
		v.Summary = fmt.Sprintf("The whole container, gwrap included, was most likely killed by the kernel's OOM killer %s: memory.oom.group was set, so one OOM kill takes every process, and the container's working set was rising fast at the end (%s) with no stop signal; the rise to the limit came after the last sample and was not recorded.",
			bound, rising)
		if f.victim.PID != 0 {
			v.Summary = also(v.Summary, fmt.Sprintf("the largest worker was %d with %s resident at its last sample", f.victim.PID, mib(f.lastSeen[f.victim].RSS())))
		}
		v.Confidence = "medium"
		v.Advice = oomAdvice(true)
	case f.term != nil:
		// DESIGN's verdict table has no cause for this: the contract's causes stay the only ones,
		// and the summary says what the record shows.
		v.Cause = postmortem.CauseUnknown
		v.Summary = fmt.Sprintf("The container was killed while stopping: gwrap received %s at %s and died %s, before it finished (its stop budget was %s).", sigName(f.term.Name), f.term.Time.UTC().Format(time.RFC3339), bound, secs(rec.StopBudget))
		v.Summary = also(v.Summary, "the platform's grace period (docker stop's 10 s, Kubernetes' terminationGracePeriodSeconds) most likely ran out before the stop finished, and every process was killed with it")
		v.Confidence = "medium"
		v.Advice = append(v.Advice, "make gwrap's --stop-budget and Gunicorn's --graceful-timeout fit inside the platform's grace period, or raise the grace period")
	default:
		v.Cause = postmortem.CauseUnknown
		v.Summary = fmt.Sprintf("gwrap's previous run (pid %d) died %s without closing its flight record, and the record shows no OOM kill and no stop signal", id.PID, bound)
		if atLimit {
			v.Summary += fmt.Sprintf("; the container's working set was near its limit (%s of %s) at the end", mib(f.wsMax), mib(f.limit))
		}
		v.Summary += ": something outside killed every process (a node or instance restart, the platform, an OOM kill in a parent cgroup)."
		v.Confidence = "low"
		v.Missing = append(v.Missing, "what killed the container (the platform's events or the node's kernel log)")
		v.Advice = append(v.Advice, "check the platform's events for the container's restart (kubectl describe pod: Last State; App Service: the instance's restart history)")
	}
	// The report's timeline and container are postmortem's own (unreadable values stay null).
	r := postmortem.NewReport(postmortem.Evidence{Incident: inc, Settings: rec.Settings, Timeline: rec.Workers[f.victim],
		Container: rec.Container}, v, "", now)
	r.ID = fmt.Sprintf("%s-%d-previous-run", at.UTC().Format("20060102T150405.000Z"), id.PID)
	r.Host = postmortem.Host{Hostname: id.Host, GwrapVersion: id.Version}
	return r
}

// oomAdvice is the advice after an OOM kill of the whole container.
func oomAdvice(group bool) []string {
	a := []string{"give the container more memory, or run fewer workers (--workers) so their sum fits the limit",
		"if a worker's memory grows with each request, recycle workers with --max-requests 1000 --max-requests-jitter 100"}
	if group {
		a = append(a, "with memory.oom.group=1 (Kubernetes ≥ 1.28 on cgroup v2) one worker's OOM kill restarts the container; keep each worker well under the limit")
	}
	return a
}

func lastLines(ls []Line, n int) []Line {
	if len(ls) > n {
		return ls[len(ls)-n:]
	}
	return ls
}

func sigName(s string) string {
	switch s {
	case "terminated":
		return "SIGTERM"
	case "interrupt":
		return "SIGINT"
	case "quit":
		return "SIGQUIT"
	}
	return s
}

func also(summary, clause string) string {
	return strings.TrimSuffix(summary, ".") + "; " + clause + "."
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
