package postmortem

import (
	"fmt"
	"strings"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
)

// Incident is what happened to one worker, as correlated from Gunicorn's lines, the worker
// watcher and the cgroup.
type Incident struct {
	Kind      Kind      `json:"kind"`
	PID       int       `json:"pid"`
	StartTime uint64    `json:"start_ticks,omitempty"`
	At        time.Time `json:"at"`
	BootedAt  time.Time `json:"booted_at,omitzero"`

	Signal       string `json:"signal,omitempty"`    // SIGKILL, SIGSEGV…
	ExitCode     *int   `json:"exit_code,omitempty"` // when Gunicorn logged one
	Timeout      bool   `json:"timeout_logged"`      // Gunicorn logged WORKER TIMEOUT
	HandledAbort bool   `json:"handled_abort"`       // the worker handled the SIGABRT and exited
	Escalated    bool   `json:"timeout_escalation"`  // Gunicorn SIGKILLed it after its timeout
	OOMHint      bool   `json:"gunicorn_oom_hint"`   // Gunicorn said "Perhaps out of memory?"
	OOMKillDelta uint64 `json:"oom_kill_delta"`      // the cgroup's oom_kill counter moved this much
	BootStuck    bool   `json:"boot_stuck"`          // gwrap saw it never finish booting
	Vanished     bool   `json:"vanished"`            // gwrap saw the process disappear

	Lines     []string `json:"gunicorn_lines,omitempty"`
	Traceback []string `json:"traceback,omitempty"`
	StuckAt   string   `json:"stuck_at,omitempty"` // the app's frame in the abort traceback
}

// Evidence is everything the classifier looks at.
type Evidence struct {
	Incident  Incident
	Settings  gunicorn.Settings
	Timeline  []probes.Sample // the worker's last samples, oldest first
	Deep      *probes.Deep    // the last deep sample, if one was taken
	Container []memwatch.Stats
}

// window is what the classifier measured over the worker's last silence.
type window struct {
	samples    []probes.Sample
	silence    time.Duration // the longest heartbeat age seen (−1 unknown)
	neverBeat  bool
	cpu        float64 // mean CPU percent of one core
	runDelay   float64 // mean run-queue wait percent
	runnable   float64 // share of samples in state R
	blockedIO  float64 // share in state D
	rss        uint64  // last RSS
	wsMax      uint64  // largest working set
	limit      uint64  // the limit (0 unknown)
	wsFrac     float64 // wsMax / limit
	memPSI     float64
	psiHost    bool
	throttled  uint64 // nr_throttled increase
	quota      float64
	haveCgroup bool
	oomKnown   bool // the cgroup's oom_kill counter could be read: "it did not move" means something
}

// measure picks the samples of the last silence: those within the longest heartbeat age before
// the incident (or the timeout, or 30 s, when no heartbeat was read).
func measure(e Evidence) window {
	w := window{silence: -1}
	span := time.Duration(e.Settings.Timeout) * time.Second
	if n := len(e.Timeline); n > 0 {
		last := e.Timeline[n-1]
		w.rss = last.RSS()
		w.neverBeat = last.HeartbeatAge >= 0 && !last.Heartbeats
		for _, s := range e.Timeline {
			if s.HeartbeatAge > w.silence && e.Incident.At.Sub(s.Time) < 2*span+10*time.Second {
				w.silence = s.HeartbeatAge
			}
		}
		if w.silence > 0 {
			span = w.silence
		}
	}
	if span <= 0 {
		span = 30 * time.Second
	}
	from := e.Incident.At.Add(-span - time.Second)
	for _, s := range e.Timeline {
		if !s.Time.Before(from) {
			w.samples = append(w.samples, s)
		}
	}
	var cpuN int
	for i, s := range w.samples {
		if i > 0 || len(w.samples) == 1 {
			w.cpu += s.CPUPercent()
			w.runDelay += s.RunDelayPct
			cpuN++
		}
		switch s.State {
		case "R":
			w.runnable++
		case "D":
			w.blockedIO++
		}
	}
	if cpuN > 0 {
		w.cpu /= float64(cpuN)
		w.runDelay /= float64(cpuN)
	}
	if n := float64(len(w.samples)); n > 0 {
		w.runnable /= n
		w.blockedIO /= n
	}
	var firstThrottled *uint64
	for _, st := range e.Container {
		w.oomKnown = w.oomKnown || st.OOMKill.Known
		if st.Time.Before(from) || st.Time.After(e.Incident.At.Add(2*time.Second)) {
			continue
		}
		w.haveCgroup = true
		if st.WorkingSet.Known && st.WorkingSet.V > w.wsMax {
			w.wsMax = st.WorkingSet.V
		}
		if st.Limit.Known {
			w.limit = st.Limit.V
		}
		if st.PSI.Known && st.PSI.MemorySome10 > w.memPSI {
			w.memPSI, w.psiHost = st.PSI.MemorySome10, st.PSI.HostWide
		}
		if st.CPUThrottled.Known {
			if firstThrottled == nil {
				v := st.CPUThrottled.V
				firstThrottled = &v
			} else if st.CPUThrottled.V > *firstThrottled {
				w.throttled = st.CPUThrottled.V - *firstThrottled
			}
		}
		if st.CPUQuotaCores > 0 {
			w.quota = st.CPUQuotaCores
		}
	}
	if w.limit > 0 {
		w.wsFrac = float64(w.wsMax) / float64(w.limit)
	}
	return w
}

// Classify turns evidence into a verdict. It is a pure function: same evidence, same verdict.
func Classify(e Evidence, th Thresholds) Verdict {
	inc := e.Incident
	w := measure(e)
	timeout := time.Duration(e.Settings.Timeout) * time.Second
	v := Verdict{Evidence: []Fact{}, Advice: []string{}}
	fact := func(f, val, thr string) { v.Evidence = append(v.Evidence, Fact{f, val, thr}) }

	// The two facts the user asked for, always filled.
	v.NearMemoryLimit = w.limit > 0 && w.wsFrac >= th.NearLimit
	v.RanLong = inc.Timeout || inc.BootStuck || (timeout > 0 && w.silence >= time.Duration(th.LongShare*float64(timeout)))
	oomKilled := inc.OOMKillDelta > 0 && (inc.Signal == "" || inc.Signal == "SIGKILL") && !inc.HandledAbort && inc.ExitCode == nil

	if w.limit > 0 {
		fact("container working set at its peak", fmt.Sprintf("%s of %s (%.0f%%)", mib(w.wsMax), mib(w.limit), 100*w.wsFrac), fmt.Sprintf("near at ≥ %.0f%%", 100*th.NearLimit))
	} else if w.haveCgroup {
		fact("container memory limit", "none set", "")
	} else {
		v.Missing = append(v.Missing, "container memory (cgroup unreadable)")
	}
	if w.silence >= 0 {
		fact("worker silent (heartbeat age) before the kill", secs(w.silence), fmt.Sprintf("timeout %s; ran long at ≥ %.0f%% of it", secs(timeout), 100*th.LongShare))
	} else {
		v.Missing = append(v.Missing, "heartbeat age")
	}
	if len(w.samples) > 0 {
		fact("worker CPU during the silence", fmt.Sprintf("%.0f%% of one core", w.cpu), fmt.Sprintf("computing at ≥ %.0f%%", th.CPUBound))
		fact("worker state during the silence", stateMix(w.samples), "")
		fact("worker run-queue wait", fmt.Sprintf("%.0f%% of the time", w.runDelay), fmt.Sprintf("starved at ≥ %.0f%%", th.RunDelay))
		fact("worker resident memory", mib(w.rss), "")
	} else {
		v.Missing = append(v.Missing, "worker samples")
	}
	if w.quota > 0 {
		fact("container CPU quota", fmt.Sprintf("%.2f cores", w.quota), "")
	}
	if w.throttled > 0 {
		fact("CFS periods throttled during the silence", fmt.Sprint(w.throttled), "any")
	}
	if w.memPSI > 0 {
		scope := "container"
		if w.psiHost {
			scope = "host-wide"
		}
		fact("memory pressure (PSI some avg10, "+scope+")", fmt.Sprintf("%.1f%%", w.memPSI), fmt.Sprintf("high at ≥ %.0f%%", th.MemoryPSI))
	}
	if inc.Timeout {
		fact("Gunicorn logged", "WORKER TIMEOUT", "")
	}
	if inc.Signal != "" {
		fact("the worker died of", inc.Signal, "")
	}
	if inc.ExitCode != nil {
		fact("the worker exited with code", fmt.Sprint(*inc.ExitCode), "")
	}
	if inc.Vanished && inc.Signal == "" && inc.ExitCode == nil {
		fact("gwrap saw the process disappear", "with no Gunicorn line about its end", "")
	}
	if w.oomKnown || inc.OOMKillDelta > 0 {
		fact("cgroup oom_kill counter moved by", fmt.Sprint(inc.OOMKillDelta), "")
	} else {
		v.Missing = append(v.Missing, "the cgroup's oom_kill counter")
	}
	exception := lastException(inc.Traceback)
	if exception != "" {
		fact("exception", exception, "")
	}
	waiting := []string{}
	if e.Deep != nil {
		waiting = e.Deep.WaitingOn()
		if len(waiting) > 0 {
			fact("waiting on", strings.Join(waiting, ", "), "")
		}
		if e.Deep.Syscall != "" {
			fact("in system call", e.Deep.Syscall, "")
		}
	}
	if inc.StuckAt != "" {
		fact("stuck at (abort traceback)", inc.StuckAt, "")
	}

	psiHigh := w.memPSI >= th.MemoryPSI && !w.psiHost
	starved := w.runDelay >= th.RunDelay || (w.throttled > 0 && w.runnable >= 0.5 && w.cpu < th.CPUBound)
	who := fmt.Sprintf("Worker %d", inc.PID)
	switch {
	case oomKilled:
		v.Cause = CauseOOMKilled
		// It reached the limit by definition, even when a 1 Hz sample missed the last spike.
		v.NearMemoryLimit = true
		v.Summary = fmt.Sprintf("%s was killed by the kernel's OOM killer: the container's oom_kill counter moved as it died%s.", who, atLimit(w))
		v.Advice = append(v.Advice, "give the container more memory, or run fewer workers (--workers) so their sum fits the limit",
			"if a worker's memory grows with each request, recycle workers with --max-requests 1000 --max-requests-jitter 100",
			"with --preload the app's memory is shared by the workers (copy-on-write)")
	case inc.BootStuck || (inc.Timeout && w.neverBeat):
		v.Cause = CauseBootTimeout
		v.Summary = fmt.Sprintf("%s never finished booting within the %s timeout (it never sent a heartbeat): the app's import or start-up is too slow.", who, secs(timeout))
		if inc.BootStuck && !inc.Timeout {
			v.Summary = also(v.Summary, "Gunicorn ≥ 22 does not time out a booting worker, so it would have stayed stuck")
		}
		v.Advice = append(v.Advice, "raise --timeout above the boot time, or load the app once in the master with --preload",
			"move slow start-up work (model loads, connections) out of import time")
	case inc.Kind == KindSignal || inc.Kind == KindExit || (!inc.Timeout && !inc.BootStuck):
		v.Cause = CauseCrashed
		switch {
		case inc.Kind == KindBootFailure && (inc.ExitCode == nil || *inc.ExitCode == 3 || *inc.ExitCode == 4):
			v.Summary = fmt.Sprintf("%s failed to boot", who)
			if inc.ExitCode != nil {
				v.Summary += fmt.Sprintf(" (exit code %d)", *inc.ExitCode)
			}
			if exception != "" {
				v.Summary += ": " + exception
			}
			v.Summary += "; Gunicorn stops when a worker cannot boot."
			v.Confidence = "high"
			v.Advice = append(v.Advice, "run the app's import by hand (python -c 'import yourapp') with the container's environment to see the error")
		case (inc.Signal == "SIGKILL" || inc.Signal == "" && inc.ExitCode == nil) && !w.oomKnown:
			v.Cause = CauseUnknown
			how := "was SIGKILLed with no Gunicorn timeout before it"
			if inc.Signal == "" {
				how = "disappeared without a Gunicorn line saying why"
			}
			v.Summary = fmt.Sprintf("%s %s, and gwrap could not read the cgroup's oom_kill counter: it cannot tell an OOM kill from anything else.", who, how)
			v.Confidence = "low"
			v.Advice = append(v.Advice, fmt.Sprintf("check the platform's memory metrics or the kernel log (\"Killed process %d\") for an OOM kill", inc.PID))
		case inc.Signal == "SIGKILL":
			v.Summary = fmt.Sprintf("%s was SIGKILLed without a Gunicorn timeout and without the cgroup's OOM killer: something else sent SIGKILL (the platform, a person, another supervisor, or an OOM kill outside this container's cgroup).", who)
			if inc.OOMHint {
				v.Summary = also(v.Summary, "Gunicorn's \"Perhaps out of memory?\" is a guess it adds to every SIGKILL, and the oom_kill counter did not move")
			}
			v.Confidence = "medium"
		case inc.Signal != "":
			v.Summary = fmt.Sprintf("%s crashed: it died of %s (a fault in C code or an abort), with no timeout before it.", who, inc.Signal)
			v.Confidence = "high"
		case inc.ExitCode != nil && (*inc.ExitCode == 3 || *inc.ExitCode == 4):
			what := map[int]string{3: "failed to boot", 4: "could not load the app"}[*inc.ExitCode]
			v.Summary = fmt.Sprintf("%s %s (exit code %d)", who, what, *inc.ExitCode)
			if exception != "" {
				v.Summary += ": " + exception
			}
			v.Summary += "; Gunicorn stops when a worker cannot boot."
			v.Confidence = "high"
			v.Advice = append(v.Advice, "run the app's import by hand (python -c 'import yourapp') with the container's environment to see the error")
		case inc.ExitCode != nil:
			v.Summary = fmt.Sprintf("%s exited with code %d: the app or a library ended the process", who, *inc.ExitCode)
			if exception != "" {
				v.Summary += " (" + exception + ")"
			}
			v.Summary += "."
			v.Confidence = "high"
		default:
			v.Summary = fmt.Sprintf("%s disappeared without a Gunicorn line saying why and without an OOM kill.", who)
			v.Confidence = "low"
			v.Missing = append(v.Missing, "a Gunicorn line about the worker's end (--log-level info or lower shows them; Gunicorn ≤ 19.9 logs none)")
		}
		switch inc.Signal {
		case "SIGSEGV", "SIGABRT", "SIGBUS", "SIGILL", "SIGFPE":
			v.Advice = append(v.Advice, "a "+inc.Signal+" points at a C extension: run with PYTHONFAULTHANDLER=1 to get the Python stack of the crash in the log")
		case "SIGKILL":
			if v.Cause == CauseCrashed {
				v.Advice = append(v.Advice, "find who sent SIGKILL: the platform restarting or scaling the instance, an operator's kill -9, or a memory limit on a parent cgroup (check the platform's memory metrics)")
			}
		default:
			v.Advice = append(v.Advice, "look at the worker's last log lines and its traceback in this report")
		}
	case v.NearMemoryLimit || psiHigh || (len(w.samples) > 0 && w.samples[len(w.samples)-1].Swap > 0 && w.blockedIO > 0.3):
		v.Cause = CauseMemoryPressure
		v.Summary = fmt.Sprintf("%s timed out while the container was near its memory limit%s: the kernel was reclaiming memory, which slows everything.", who, atLimit(w))
		v.Advice = append(v.Advice, "give the container more memory or run fewer workers", "recycle workers that grow with --max-requests")
	case w.cpu >= th.CPUBound:
		v.Cause = CauseCPUBound
		v.Summary = fmt.Sprintf("%s ran long computing: %.0f%% of a core for %s, past the %s timeout.", who, w.cpu, secs(max(w.silence, 0)), secs(timeout))
		v.Advice = append(v.Advice, "make the request cheaper or move the work to a background job", "or raise --timeout above the longest computation")
		if c := strings.ToLower(e.Settings.WorkerClass); c != "sync" && c != "" {
			v.Advice = append(v.Advice, "with "+e.Settings.WorkerClass+" workers a computation blocks the worker's main loop: run it in a thread or process pool")
		}
	case starved:
		v.Cause = CauseCPUStarved
		v.Summary = fmt.Sprintf("%s wanted CPU but was held back: %.0f%% of a core", who, w.cpu)
		if w.quota > 0 {
			v.Summary += fmt.Sprintf(" under a %.2f-core quota throttled %d times", w.quota, w.throttled)
		}
		v.Summary += "."
		v.Advice = append(v.Advice, "raise the container's CPU limit, or run fewer workers on it (--workers ≈ 2 × cores + 1 counts the quota, not the host)")
	case len(w.samples) > 0:
		v.Cause = CauseBlocked
		v.Summary = fmt.Sprintf("%s simply ran long waiting (%.0f%% CPU, %s)", who, w.cpu, stateMix(w.samples))
		if len(waiting) > 0 {
			v.Summary += ": waiting on " + describeWait(waiting[0])
		}
		v.Summary += fmt.Sprintf(", longer than the %s timeout.", secs(timeout))
		if len(waiting) > 0 && strings.HasPrefix(waiting[0], "tcp ") {
			v.Advice = append(v.Advice, "the peer "+strings.TrimPrefix(waiting[0], "tcp ")+" did not answer: set a timeout on that call (database, HTTP client)")
		}
		v.Advice = append(v.Advice, "for I/O-bound apps use --worker-class gthread (with --threads) or gevent, so one slow call does not stall the worker",
			"raise --timeout above the slowest legitimate request")
	default:
		v.Cause = CauseUnknown
		v.Summary = fmt.Sprintf("%s timed out, but gwrap has no samples of it to tell why.", who)
		v.Missing = append(v.Missing, "worker samples during the silence")
	}
	if inc.Escalated && inc.OOMHint && inc.OOMKillDelta == 0 {
		if w.oomKnown {
			v.Summary = also(v.Summary, "Gunicorn's \"Perhaps out of memory?\" was its own SIGKILL after the timeout, not an OOM kill (the cgroup's oom_kill counter did not move)")
		} else {
			v.Summary = also(v.Summary, "Gunicorn's \"Perhaps out of memory?\" came right after its own timeout, so Gunicorn itself sent that SIGKILL when the worker ignored SIGABRT (the oom_kill counter could not be read to rule out an OOM kill as well)")
		}
	}
	if timeout > 0 && timeout < 240*time.Second && (v.Cause == CauseBlocked || v.Cause == CauseCPUBound) {
		v.Advice = append(v.Advice, "on Azure App Service the front end waits 240 s: a --timeout of 600 lets the platform, not Gunicorn, cut long requests")
	}
	if v.Confidence == "" {
		v.Confidence = confidence(v, w)
	}
	return v
}

// also joins a clause to a one-sentence summary.
func also(summary, clause string) string {
	return strings.TrimSuffix(summary, ".") + "; " + clause + "."
}

// lastException is the exception line that ends a Python traceback ("ValueError: …").
func lastException(tb []string) string {
	for i := len(tb) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(tb[i]); l != "" && !strings.HasPrefix(l, "^") && !strings.HasPrefix(tb[i], " ") {
			return l
		}
	}
	return ""
}

func confidence(v Verdict, w window) string {
	switch {
	case v.Cause == CauseUnknown:
		return "low"
	case v.Cause == CauseOOMKilled || v.Cause == CauseBootTimeout:
		return "high"
	case len(w.samples) >= 3 && w.haveCgroup:
		return "high"
	case len(w.samples) > 0:
		return "medium"
	}
	return "low"
}

func atLimit(w window) string {
	if w.limit == 0 {
		return ""
	}
	return fmt.Sprintf(" (working set %s of a %s limit)", mib(w.wsMax), mib(w.limit))
}

func stateMix(ss []probes.Sample) string {
	counts := map[string]int{}
	for _, s := range ss {
		counts[s.State]++
	}
	names := map[string]string{"R": "running", "S": "sleeping", "D": "in uninterruptible I/O", "T": "stopped", "Z": "zombie"}
	var parts []string
	for _, st := range []string{"R", "S", "D", "T", "Z"} {
		if n := counts[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d%%", names[st], 100*n/len(ss)))
		}
	}
	return strings.Join(parts, ", ")
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func secs(d time.Duration) string {
	if d < 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// kernelWaits names the wait channels a stuck Python worker is usually in.
var kernelWaits = map[string]string{
	"hrtimer_nanosleep": "a timed sleep", "do_nanosleep": "a timed sleep",
	"futex_wait_queue": "a lock or a thread (futex)", "futex_wait_queue_me": "a lock or a thread (futex)", "futex_wait": "a lock or a thread (futex)",
	"sk_wait_data": "a socket read", "wait_woken": "a socket read", "inet_csk_accept": "a new connection",
	"do_select": "sockets (select)", "do_sys_poll": "sockets (poll)", "poll_schedule_timeout": "sockets (poll)", "ep_poll": "sockets (epoll)",
	"pipe_read": "a pipe read", "pipe_write": "a pipe write", "io_schedule": "disk I/O", "wait_on_page_bit": "disk I/O",
	"do_wait": "a child process",
}

// describeWait turns "wchan hrtimer_nanosleep" into words; a socket peer stays as it is.
func describeWait(w string) string {
	name, ok := strings.CutPrefix(w, "wchan ")
	if !ok {
		return w
	}
	if what, known := kernelWaits[name]; known {
		return what + " (kernel wait " + name + ")"
	}
	return "the kernel (wait channel " + name + ")"
}
