package postmortem

import (
	"fmt"
	"strings"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
)

// surge is the least rise of the working set at the end of a run (or a quarter of the limit, if
// more) that, with memory.oom.group set, reads as the growth an OOM kill of the whole container
// cut short.
const surge = 64 << 20

// PreviousRun is what a flight record shows of a gwrap run that died with its whole container
// (a group OOM kill, a stop deadline, a node restart): package flightrec reads the record and
// finds these facts; ExplainPreviousRun writes its post-mortem (incident.kind previous_run) from
// them, with the words and advice of every other post-mortem.
type PreviousRun struct {
	Host       string
	PID        int       // gwrap's pid in that run
	Version    string    // gwrap's version in that run
	Started    time.Time // when that run started
	Last       time.Time // its last record: it died between Last and this start
	StopBudget time.Duration
	Settings   gunicorn.Settings // what the record kept of Gunicorn's settings
	Container  []memwatch.Stats  // every cgroup sample of the record, oldest first

	// End is how far before Last "at the end" reaches; the facts below are of that span.
	End time.Duration
	// Sampled: the record has cgroup samples. WSPeak is the working set's peak at the end (the
	// usage where the working set is unknown); Limit the memory limit (0: none set or unknown).
	Sampled       bool
	WSPeak, Limit uint64
	OOMGroup      bool   // memory.oom.group was 1: one OOM kill kills every process
	OOMKnown      bool   // the oom_kill counter was readable
	OOMDelta      uint64 // its increase at the end (or the OOM notifications there)
	// Rise is the working set's rise at the end: from its lowest (the last sample still there,
	// at RiseFrom) to the last sample (WSLast, at RiseTo). A container growing fast at the end.
	Rise, WSLast     uint64
	RiseFrom, RiseTo time.Time
	// Stop is the last stop signal (SIGTERM, SIGINT, SIGQUIT) that run received, if any.
	Stop *Stop
	// Workers are the workers alive at the end, the largest first, with their last sample;
	// AnyWorkers says whether the record has worker samples at all.
	Workers    []WorkerEnd
	AnyWorkers bool
	// Victim is the worker the death is pinned on (the largest at the end, else the largest the
	// record has; zero: none), and Timeline its samples.
	Victim   probes.ID
	Timeline []probes.Sample
	Lines    []string // Gunicorn's last lines about workers' ends, as written (redacted here)
	// Requests are those the workers alive at the end were serving at their last sample, with
	// their ages at the record's last line.
	Requests []WorkerRequest
}

// WorkerRequest is a request a worker was serving at the end of a run.
type WorkerRequest struct {
	PID     int
	Request Request
}

// Stop is a stop signal a run received.
type Stop struct {
	Signal string // SIGTERM, SIGINT, SIGQUIT
	At     time.Time
}

// WorkerEnd is a worker alive at the end of a run, with its last sample.
type WorkerEnd struct {
	ID   probes.ID
	Last probes.Sample
}

// ExplainPreviousRun is the post-mortem of a run that died without closing its flight record;
// now is this start: the death happened between p.Last and now.
func ExplainPreviousRun(p PreviousRun, now time.Time, th Thresholds) Report {
	at := p.Last
	since := now.Sub(at)
	v := Verdict{Evidence: []Fact{}, Advice: []string{}}
	fact := func(name, val, thr string) {
		v.Evidence = append(v.Evidence, Fact{Fact: name, Value: val, Threshold: thr})
	}

	bound := fmt.Sprintf("between %s (its last record) and this start at %s, %s later", at.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), secs(since))
	fact("gwrap's previous run", fmt.Sprintf("pid %d, version %s, started %s", p.PID, p.Version, p.Started.UTC().Format(time.RFC3339)), "")
	fact("it died", bound, "")
	fact("its flight record was closed", "no (gwrap never exited on its own)", "")

	frac := 0.0
	if p.Limit > 0 {
		frac = float64(p.WSPeak) / float64(p.Limit)
		fact(fmt.Sprintf("container working set at its peak in the last %.0f s", p.End.Seconds()), fmt.Sprintf("%s of %s (%.0f%%)", mib(p.WSPeak), mib(p.Limit), 100*frac), fmt.Sprintf("near at ≥ %.0f%%", 100*th.NearLimit))
	} else if p.Sampled {
		fact("container memory limit", "none set", "")
	} else {
		v.Missing = append(v.Missing, "container samples in the flight record")
	}
	atLimit := p.Limit > 0 && frac >= th.NearLimit
	v.NearMemoryLimit = atLimit
	if p.OOMGroup {
		fact("memory.oom.group", "1 (one OOM kill kills every process of the container)", "")
	}
	if p.OOMKnown || p.OOMDelta > 0 {
		fact(fmt.Sprintf("cgroup oom_kill counter moved in the last %.0f s by", p.End.Seconds()), fmt.Sprint(p.OOMDelta), "")
	} else {
		v.Missing = append(v.Missing, "the cgroup's oom_kill counter")
	}
	for _, w := range p.Workers {
		s := w.Last
		fact(fmt.Sprintf("worker %d's last sample", w.ID.PID), fmt.Sprintf("%s resident, %.0f%% CPU, state %s at %s", mib(s.RSS()), s.CPUPercent(), s.State, s.Time.UTC().Format("15:04:05")), "")
	}
	if !p.AnyWorkers {
		v.Missing = append(v.Missing, "worker samples in the flight record")
	}
	if p.Stop != nil {
		fact("gwrap received", fmt.Sprintf("%s at %s (%s before its last record; stop budget %s)", p.Stop.Signal, p.Stop.At.UTC().Format(time.RFC3339), secs(at.Sub(p.Stop.At)), secs(p.StopBudget)), "")
	}

	inc := Incident{Kind: KindPreviousRun, PID: p.PID, At: at, OOMKillDelta: p.OOMDelta}
	if p.Victim.PID != 0 {
		inc.PID, inc.StartTime = p.Victim.PID, p.Victim.StartTime
	}
	inc.Lines = RedactAll(p.Lines) // as the engine's reports quote them

	switch {
	case p.OOMDelta > 0 || (p.OOMGroup && atLimit):
		v.Cause = CauseOOMKilled
		v.NearMemoryLimit = true
		inc.Signal = "SIGKILL"
		why := fmt.Sprintf("the cgroup's oom_kill counter moved by %d at the end", p.OOMDelta)
		if p.OOMDelta == 0 {
			why = fmt.Sprintf("its working set was at the memory limit (%s of %s) with memory.oom.group set", mib(p.WSPeak), mib(p.Limit))
		} else if p.OOMGroup {
			why += " with memory.oom.group set"
		}
		v.Summary = fmt.Sprintf("The whole container, gwrap included, was killed by the kernel's OOM killer %s: %s, so one OOM kill took every process.", bound, why)
		if p.Victim.PID != 0 {
			v.Summary = also(v.Summary, fmt.Sprintf("the largest worker was %d with %s resident at its last sample", p.Victim.PID, mib(p.victimRSS())))
		}
		v.Confidence = "high"
		if p.OOMDelta == 0 {
			v.Confidence = "medium"
		}
		v.Advice = oomAdvice(p.OOMGroup)
	case p.Stop == nil && p.OOMGroup && p.Limit > 0 && p.Rise >= max(surge, p.Limit/4):
		// memory.oom.group makes the kernel kill every process at the first OOM kill, gwrap too,
		// so the record ends at its last sample before the kill: a working set rising fast there
		// with no stop signal is what such a death leaves; the rise to the limit itself was not
		// sampled, hence medium confidence.
		v.Cause = CauseOOMKilled
		v.NearMemoryLimit = true
		inc.Signal = "SIGKILL"
		rising := fmt.Sprintf("up %s in %s to %s of its %s limit", mib(p.Rise), secs(p.RiseTo.Sub(p.RiseFrom)), mib(p.WSLast), mib(p.Limit))
		fact("container working set rising at the end", rising, fmt.Sprintf("marked at +%s or a quarter of the limit", mib(surge)))
		v.Summary = fmt.Sprintf("The whole container, gwrap included, was most likely killed by the kernel's OOM killer %s: memory.oom.group was set, so one OOM kill takes every process, and the container's working set was rising fast at the end (%s) with no stop signal; the rise to the limit came after the last sample and was not recorded.",
			bound, rising)
		if p.Victim.PID != 0 {
			v.Summary = also(v.Summary, fmt.Sprintf("the largest worker was %d with %s resident at its last sample", p.Victim.PID, mib(p.victimRSS())))
		}
		v.Confidence = "medium"
		v.Advice = oomAdvice(true)
	case p.Stop != nil:
		// DESIGN's verdict table has no cause for this: the contract's causes stay the only ones,
		// and the summary says what the record shows.
		v.Cause = CauseUnknown
		v.Summary = fmt.Sprintf("The container was killed while stopping: gwrap received %s at %s and died %s, before it finished (its stop budget was %s).", p.Stop.Signal, p.Stop.At.UTC().Format(time.RFC3339), bound, secs(p.StopBudget))
		v.Summary = also(v.Summary, "the platform's grace period (docker stop's 10 s, Kubernetes' terminationGracePeriodSeconds) most likely ran out before the stop finished, and every process was killed with it")
		v.Confidence = "medium"
		v.Advice = append(v.Advice, "make gwrap's --stop-budget and Gunicorn's --graceful-timeout fit inside the platform's grace period, or raise the grace period")
	default:
		v.Cause = CauseUnknown
		v.Summary = fmt.Sprintf("gwrap's previous run (pid %d) died %s without closing its flight record, and the record shows no OOM kill and no stop signal", p.PID, bound)
		if atLimit {
			v.Summary += fmt.Sprintf("; the container's working set was near its limit (%s of %s) at the end", mib(p.WSPeak), mib(p.Limit))
		}
		v.Summary += ": something outside killed every process (a node or instance restart, the platform, an OOM kill in a parent cgroup)."
		v.Confidence = "low"
		v.Missing = append(v.Missing, "what killed the container (the platform's events or the node's kernel log)")
		v.Advice = append(v.Advice, "check the platform's events for the container's restart (kubectl describe pod: Last State; App Service: the instance's restart history)")
	}
	if len(p.Requests) > 0 {
		named := make([]string, 0, maxNamed)
		for i, q := range p.Requests {
			inc.Requests = append(inc.Requests, q.Request)
			if i < maxNamed {
				named = append(named, fmt.Sprintf("worker %d was serving %s", q.PID, q.Request.Running()))
			}
		}
		s := "In flight at its last record: " + strings.Join(named, "; ")
		if n := len(p.Requests) - len(named); n > 0 {
			s += fmt.Sprintf(" and %d more", n)
		}
		v.Summary += " " + s + "."
	}
	// The report's timeline and container are every report's (unreadable values stay null).
	r := NewReport(Evidence{Incident: inc, Settings: p.Settings, Timeline: p.Timeline, Container: p.Container}, v, "", now)
	r.ID = fmt.Sprintf("%s-%d-previous-run", at.UTC().Format("20060102T150405.000Z"), p.PID)
	r.Host = Host{Hostname: p.Host, GwrapVersion: p.Version}
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

// victimRSS is the victim's resident set at its last sample.
func (p PreviousRun) victimRSS() uint64 {
	if n := len(p.Timeline); n > 0 {
		return p.Timeline[n-1].RSS()
	}
	return 0
}
