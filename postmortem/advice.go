package postmortem

import (
	"fmt"
	"strings"
	"time"

	"github.com/gwrap/gwrap/probes"
)

// evidence lists the facts behind a verdict, each with the threshold it was held to.
func evidence(f Facts, th Thresholds) []Fact {
	out := []Fact{}
	fact := func(name, val, thr string) { out = append(out, Fact{name, val, thr}) }
	switch {
	case f.Limit > 0 && f.WSKnown:
		fact("container working set at its peak before the end", fmt.Sprintf("%s of %s (%.0f%%)", mib(f.WSPeak), mib(f.Limit), 100*f.WSFrac), fmt.Sprintf("near at ≥ %.0f%%", 100*th.NearLimit))
	case f.Limit > 0:
		fact("container memory limit", mib(f.Limit), "")
	case f.HaveCgroup:
		fact("container memory limit", "none set", "")
	}
	if f.PeakKnown {
		val := mib(f.RecordedPeak)
		if f.Limit > 0 {
			val += fmt.Sprintf(" (%.0f%% of the limit)", 100*float64(f.RecordedPeak)/float64(f.Limit))
		}
		fact("the cgroup's recorded peak usage (kernel)", val, "")
	}
	if f.Silence >= 0 && f.Kind != KindExecTimeout {
		fact("worker silent (heartbeat age) before its end", secs(f.Silence), fmt.Sprintf("%s %s; ran long at ≥ %.0f%% of it", limitName(f), secs(f.Timeout), 100*th.LongShare))
	}
	if f.Samples > 0 {
		if f.CPUKnown {
			fact("worker CPU during the silence", fmt.Sprintf("%.0f%% of one core", f.CPU), fmt.Sprintf("computing at ≥ %.0f%%", th.CPUBound))
		}
		fact("worker state during the silence", f.States, "")
		if f.CPUKnown {
			fact("worker run-queue wait", fmt.Sprintf("%.0f%% of the time", f.RunDelay), fmt.Sprintf("starved at ≥ %.0f%%", th.RunDelay))
		}
		if f.RSSKnown {
			fact("worker resident memory at its peak during the silence", mib(f.PeakRSS), "")
		}
	}
	if g := f.Growth; g != nil {
		how := "grew"
		if g.Steady {
			how = "grew steadily"
		}
		fact("worker memory "+how, fmt.Sprintf("from %s to %s in %s", mib(g.From), mib(g.To), span(g.Over)), "marked at +64 MiB and +50%")
	}
	if f.Quota > 0 {
		fact("container CPU quota", fmt.Sprintf("%.2f cores", f.Quota), "")
	}
	if f.Throttled > 0 {
		fact("CFS periods throttled during the silence", fmt.Sprint(f.Throttled), "any")
	}
	if f.MemPSI > 0 {
		scope := "container"
		if f.PSIHost {
			scope = "host-wide"
		}
		fact("memory pressure (PSI some avg10, "+scope+")", fmt.Sprintf("%.1f%%", f.MemPSI), fmt.Sprintf("high at ≥ %.0f%%", th.MemoryPSI))
	}
	if sat := f.Saturation; sat != nil {
		fact("every worker busy during the silence", yesNo(sat.AllWorkersBusy), "")
		q := fmt.Sprintf("up to %d", sat.QueueMax)
		if sat.QueueRose {
			q += ", rising"
		}
		if sat.Backlog > 0 {
			q += fmt.Sprintf(" (listen backlog %d)", sat.Backlog)
		}
		fact("listen queue during the silence", q, "")
		if queued(f) {
			fact("the request may have waited in the listen queue", "before it started", "")
		}
	}
	if f.TimeoutLogged {
		fact("Gunicorn logged", "WORKER TIMEOUT", "")
	}
	if f.Signal != "" {
		fact("the worker died of", f.Signal, "")
	}
	if f.ExitCode != nil {
		fact("the worker exited with code", fmt.Sprint(*f.ExitCode), "")
	}
	if f.Vanished && f.Signal == "" && f.ExitCode == nil {
		fact("gwrap saw the process disappear", "with no Gunicorn line about its end", "")
	}
	if f.TimeoutInferred {
		fact("Gunicorn's timeout, told from the heartbeat", "stale past the timeout when it vanished", "Gunicorn's lines do not reach gwrap")
	}
	if f.OOMKnown || f.OOMKillDelta > 0 {
		fact("cgroup oom_kill counter moved by", fmt.Sprint(f.OOMKillDelta), "")
	}
	if len(f.OOMShared) > 0 {
		fact("also died of SIGKILL as the counter moved", workers(f.OOMShared), "one of them was the OOM kill")
	}
	if f.Exception != "" {
		fact("exception", f.Exception, "")
	}
	if len(f.Waiting) > 0 {
		var ws []string
		for _, w := range f.Waiting {
			ws = append(ws, describeWait(w))
		}
		fact("waiting on", strings.Join(ws, ", "), "")
	}
	if f.Syscall != "" {
		fact("in system call", f.Syscall, "")
	}
	if f.Where != "" {
		fact("the app's innermost frame", f.Where, "")
	}
	dirtyEvidence(f, fact)
	return out
}

// advice is what to change, fitted to the worker class, the platform and the limits set.
func advice(f Facts, d Decision) []string {
	out, done := dirtyAdvice(f, d)
	if done {
		return out
	}
	if out == nil {
		out = []string{}
	}
	add := func(a ...string) { out = append(out, a...) }
	leak := f.Growth != nil && f.Growth.Steady
	recycle := "recycle workers with --max-requests 1000 --max-requests-jitter 100"
	if f.MaxReqs > 0 {
		recycle = fmt.Sprintf("recycle workers sooner: lower --max-requests (now %d)", f.MaxReqs)
	}
	switch d.Cause {
	case CauseOOMKilled:
		add("give the container more memory, or run fewer workers (--workers) so their sum fits the limit")
		if leak {
			add("the worker's memory rose steadily, which looks like a leak: " + recycle)
		} else {
			add("if a worker's memory grows with each request, " + recycle)
		}
		add("with --preload the app's memory is shared by the workers (copy-on-write)")
	case CauseMemoryPressure:
		add("give the container more memory or run fewer workers")
		if leak {
			add("the worker's memory rose steadily, which looks like a leak: " + recycle)
		} else {
			add("recycle workers that grow with --max-requests")
		}
	case CauseBootTimeout:
		add("raise --timeout above the boot time, or load the app once in the master with --preload",
			"move slow start-up work (model loads, connections) out of import time")
	case CauseCPUBound:
		add("make the request cheaper or move the work to a background job", "or raise --timeout above the longest computation")
		if f.Async {
			add("with " + f.Class + " workers a computation blocks the worker's main loop: run it in a thread or process pool")
		}
	case CauseCPUStarved:
		if f.Quota > 0 {
			add(fmt.Sprintf("raise the container's CPU limit (now %.2f cores), or run fewer workers on it (--workers ≈ 2 × cores + 1 counts the quota, not the host)", f.Quota))
		} else {
			add("the CPUs are shared with other work (no CPU quota is set): run fewer workers, or give the container CPUs of its own (a CPU request or reservation)")
		}
	case CauseBlocked:
		if c, ok := strings.CutPrefix(first(f.Waiting), "child "); ok {
			add("the child process `" + c + "` ran past the timeout: give the call that waits for it a timeout (subprocess.run(..., timeout=...)), or run it outside the request")
		} else if p := peer(f.Waiting); p != "" && f.DirtyWait == nil {
			add("the peer " + p + " did not answer: set a timeout on that call (database, HTTP client)")
		}
		if d.Branch == BranchLoopBlocked {
			add("find the call that does not yield: a database driver or C library that gevent/eventlet cannot patch, a sync call inside async code (Uvicorn), or C code holding the GIL (gthread)",
				"run such calls in a thread pool (asyncio.to_thread, run_in_executor) or use a cooperative client, and give them a timeout")
		} else {
			add("for I/O-bound apps use --worker-class gthread (with --threads) or gevent, so one slow call does not stall the worker")
		}
		add("raise --timeout above the slowest legitimate request")
	case CauseCrashed:
		switch f.Signal {
		case "SIGSEGV", "SIGABRT", "SIGBUS", "SIGILL", "SIGFPE":
			add("a " + f.Signal + " points at a C extension: run with PYTHONFAULTHANDLER=1 to get the Python stack of the crash in the log")
		case "SIGKILL":
			add("find who sent SIGKILL: the platform restarting or scaling the instance, an operator's kill -9, or a memory limit on a parent cgroup (check the platform's memory metrics)")
		default:
			if d.Branch == BranchBootFailure {
				add("run the app's import by hand (python -c 'import yourapp') with the container's environment to see the error")
			} else {
				add("look at the worker's last log lines and its traceback in this report")
			}
		}
		if leak {
			add("the worker's memory rose steadily, which looks like a leak: " + recycle)
		}
	case CauseUnknown:
		if d.Branch == BranchOOMShared {
			add("give the container more memory, or run fewer workers (--workers) so their sum fits the limit",
				"the kernel log (\"Killed process N\", where the platform shows it) names the process the OOM killer chose")
		}
		if d.Branch == BranchNoOOMCount {
			add(fmt.Sprintf("check the platform's memory metrics or the kernel log (\"Killed process %d\") for an OOM kill", f.PID))
		}
	}
	if queued(f) {
		if f.Async {
			add("every worker was busy while requests queued: add workers (--workers) or instances")
		} else {
			add("every worker was busy while requests queued: add workers (--workers), or use an async worker class (gthread with --threads, gevent) so a slow request does not hold a whole worker")
		}
	}
	if f.Platform == "app_service" && f.Timeout > 0 && f.Timeout < 240*time.Second && (d.Cause == CauseBlocked || d.Cause == CauseCPUBound) {
		add("on Azure App Service the front end waits 240 s: a --timeout of 600 lets the platform, not Gunicorn, cut long requests")
	}
	return out
}

// peer is the first socket peer the worker waited on: "10.0.0.5:5432" or a unix path.
func peer(waiting []string) string {
	for _, w := range waiting {
		if p, ok := strings.CutPrefix(w, "tcp "); ok {
			return p
		}
		if p, ok := strings.CutPrefix(w, "tcp6 "); ok {
			return p
		}
		if p, ok := strings.CutPrefix(w, "unix "); ok {
			return p
		}
		if p, ok := strings.CutPrefix(w, "udp "); ok {
			return p
		}
		if p, ok := strings.CutPrefix(w, "udp6 "); ok {
			return p
		}
	}
	return ""
}

// first is the most telling thing the worker waited on, or "".
func first(waiting []string) string {
	if len(waiting) == 0 {
		return ""
	}
	return waiting[0]
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

// waitFamilies name kernel wait channels by what a process in them waits for. A name matches
// its family's prefix, whatever the kernel version calls the function after it
// (futex_wait_queue_me, futex_wait_queue, futex_do_wait).
var waitFamilies = []struct{ prefix, what string }{
	{"futex", "a lock or another thread (futex)"},
	{"hrtimer_nanosleep", "a timed sleep"}, {"do_nanosleep", "a timed sleep"}, {"clock_nanosleep", "a timed sleep"},
	{"schedule_hrtimeout", "a timed wait"},
	{"poll_schedule_timeout", "sockets or files (poll)"}, {"do_sys_poll", "sockets or files (poll)"}, {"do_poll", "sockets or files (poll)"},
	{"do_select", "sockets or files (select)"}, {"core_sys_select", "sockets or files (select)"},
	{"ep_poll", "sockets (epoll)"}, {"do_epoll_wait", "sockets (epoll)"},
	{"unix_stream_read", "a unix socket read"}, {"unix_stream_data_wait", "a unix socket read"}, {"unix_dgram_recvmsg", "a unix socket read"},
	{"unix_wait_for_peer", "a unix socket write (the peer is not reading)"},
	{"sk_wait_data", "a socket read"}, {"tcp_recvmsg", "a socket read"}, {"wait_woken", "a socket read"},
	{"sk_stream_wait_memory", "a socket write (the peer is not reading)"}, {"inet_wait_for_connect", "a TCP connect"},
	{"inet_csk_accept", "a new connection (accept)"}, {"unix_accept", "a new connection (accept)"},
	{"pipe_read", "a pipe read"}, {"pipe_write", "a pipe write"}, {"pipe_wait", "a pipe"},
	{"io_schedule", "disk I/O"}, {"folio_wait", "disk I/O"}, {"wait_on_page", "disk I/O"}, {"bit_wait_io", "disk I/O"},
	{"jbd2", "the filesystem journal (disk I/O)"},
	{"do_wait", "a child process"}, {"kernel_wait4", "a child process"},
	{"sigsuspend", "a signal"}, {"do_sigtimedwait", "a signal"},
	{"n_tty_read", "terminal input"},
}

// kernelWait names what a wait channel means, "" when unknown. The compiler's suffixes
// (.constprop.0, .isra.0, .part.0, .cold) are not part of the name.
func kernelWait(channel string) string {
	name, _, _ := strings.Cut(channel, ".")
	for _, fam := range waitFamilies {
		if strings.HasPrefix(name, fam.prefix) {
			return fam.what
		}
	}
	return ""
}

// describeWait turns "wchan hrtimer_nanosleep" and "child sleep 40" into words; a socket peer
// stays as it is.
func describeWait(w string) string {
	if cmd, ok := strings.CutPrefix(w, "child "); ok {
		return "its child process `" + cmd + "`"
	}
	name, ok := strings.CutPrefix(w, "wchan ")
	if !ok {
		return w
	}
	if what := kernelWait(name); what != "" {
		return what + " (kernel wait " + name + ")"
	}
	return "the kernel (wait channel " + name + ")"
}
