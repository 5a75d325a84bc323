package engine

import (
	"fmt"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// execTimeout is one dirty action that ran past --dirty-timeout: Gunicorn logged "Execution
// timeout for APP.ACTION after Ns" from the dirty worker and answered the caller with
// DirtyTimeoutError, but the action's thread cannot be cancelled and runs on. It is reported when
// its window closes (with what the worker did over the action's run, its stack, and whether it
// still runs), and followed through the worker's stack, taken every sweep, until the action ends:
// then worker.execution_end says so and the report is written again with the end.
type execTimeout struct {
	w       *worker
	app     string
	action  string
	seconds int // the --dirty-timeout it ran past, as the line says
	at      time.Time
	due     time.Time
	line    string

	stack   *probes.PyStack // the latest stack showing the action running
	deep    *probes.Deep
	noStack string // why there is no stack ("no stack: …"), once a take failed

	// runFrom is when it started to run, when it was queued behind another action on the
	// worker's only thread (--dirty-threads 1): Gunicorn's timeout counts from the call, the
	// queue included. behind names that action, while it is still running.
	runFrom    time.Time
	behindCall string
	behind     *execTimeout

	ended    time.Time
	gone     bool // it ended with its worker
	reported bool
	report   postmortem.Report
	evidence postmortem.Evidence
}

// maxExecs bounds the execution timeouts followed at once.
const maxExecs = 64

// call is "module:Class.action".
func (ex *execTimeout) call() string { return ex.app + "." + ex.action }

// started is when the call reached the worker: --dirty-timeout before the line.
func (ex *execTimeout) started() time.Time {
	return ex.at.Add(-time.Duration(ex.seconds) * time.Second)
}

// ran is when the action started to run: the call, or the end of the action it queued behind.
func (ex *execTimeout) ran() time.Time {
	if ex.runFrom.After(ex.started()) {
		return ex.runFrom
	}
	return ex.started()
}

// queueBehind notes, for a worker with one dirty thread, the action this call waited behind: one
// still running (its end is this one's start), or one that ended after this call came.
func (s *state) queueBehind(ex *execTimeout) {
	if s.settings.DirtyThreads != 1 {
		return
	}
	if d := ex.w.dirty; d.lastEnd.After(ex.started()) {
		ex.runFrom, ex.behindCall = d.lastEnd, d.lastCall
	}
	for _, prev := range s.dirty.execs {
		if prev != ex && prev.w == ex.w && prev.ended.IsZero() && prev.noStack == "" {
			ex.behind, ex.behindCall = prev, prev.call()
		}
	}
}

// execLine takes an "Execution timeout" line: believed when a dirty worker gwrap knows wrote it
// about itself, alive and older than --dirty-timeout.
func (s *state) execLine(e gunicorn.Event, at time.Time) {
	w := s.w.known(e.PID)
	if !isDirty(w) || w.gone() {
		s.unverified(e, at, "it does not come from a dirty worker gwrap knows")
		return
	}
	if w.watched && e.Seconds > 0 && at.Sub(w.bootedAt) < time.Duration(e.Seconds-1)*time.Second {
		s.unverified(e, at, "the dirty worker is younger than the timeout it names")
		return
	}
	ex := &execTimeout{w: w, app: e.App, action: e.Action, seconds: e.Seconds, at: at, line: e.Line,
		due: at.Add(s.cfg.Thresholds.FollowUpWindow)}
	if ex.seconds == 0 {
		ex.seconds = s.settings.DirtyTimeout
	}
	s.queueBehind(ex)
	if len(s.dirty.execs) >= maxExecs {
		// Actions that never end, called again and again: the oldest reported one is no longer
		// followed (its end, if it comes, is not said), so gwrap's memory stays bounded.
		for i, old := range s.dirty.execs {
			if old.reported {
				s.dirty.execs = append(s.dirty.execs[:i], s.dirty.execs[i+1:]...)
				break
			}
		}
	}
	s.dirty.execs = append(s.dirty.execs, ex)
	s.emit(ev(at, Warn, "worker.execution_timeout",
		fmt.Sprintf("dirty worker %d ran %s past the %ds --dirty-timeout: Gunicorn answered its caller with an error, but the action goes on running", w.id.PID, ex.call(), ex.seconds),
		append([]Field{f("pid", w.id.PID)}, append(s.roleFields(w), f("action", ex.call()), f("timeout_s", ex.seconds))...)...))
	if s.cfg.Follow != nil {
		s.cfg.Follow(w.id.PID, true)
	}
}

// execStack takes a followed dirty worker's stack: the action still runs while a thread of the
// worker runs it (an action of that name: one queued behind it that starts at once looks the
// same, and is taken for it).
func (s *state) execStack(e probes.Event) {
	for _, ex := range s.dirty.execs {
		if ex.w.id != e.ID || !ex.ended.IsZero() || ex.noStack != "" {
			continue
		}
		var st *probes.PyStack
		if e.Deep != nil {
			st = e.Deep.Stack
		}
		if st == nil || len(st.Frames) == 0 {
			ex.noStack = "no stack"
			if st != nil && st.Err != "" {
				ex.noStack = st.Err
			}
			s.unfollow(ex.w)
			continue
		}
		if st.DirtyRunning && (st.DirtyAction == "" || st.DirtyAction == ex.action) {
			ex.stack, ex.deep = st, e.Deep
			continue
		}
		s.execEnded(ex, e.Time, false)
	}
}

// execEnded says an action Gunicorn gave up on ended (with its worker, when gone), and writes its
// report again with the end.
func (s *state) execEnded(ex *execTimeout, at time.Time, gone bool) {
	ex.ended, ex.gone = at, gone
	ex.w.dirty.lastEnd, ex.w.dirty.lastCall = at, ex.call()
	for _, next := range s.dirty.execs {
		if next.behind == ex {
			next.behind, next.runFrom = nil, at // the call queued behind it runs from now
		}
	}
	ran := at.Sub(ex.ran())
	msg := fmt.Sprintf("dirty worker %d finished %s %.1fs after Gunicorn gave up on it (%.1fs in all)", ex.w.id.PID, ex.call(), at.Sub(ex.at).Seconds(), ran.Seconds())
	if gone {
		msg = fmt.Sprintf("dirty worker %d is gone, and %s with it, %.1fs after Gunicorn gave up on it", ex.w.id.PID, ex.call(), at.Sub(ex.at).Seconds())
	}
	s.emit(ev(at, Info, "worker.execution_end", msg, append([]Field{f("pid", ex.w.id.PID)},
		append(s.roleFields(ex.w), f("action", ex.call()), f("action_seconds", round1(ran.Seconds())),
			f("after_timeout_s", round1(at.Sub(ex.at).Seconds())), f("worker_gone", gone))...)...))
	s.unfollow(ex.w)
	if ex.reported {
		ex.evidence.Incident.ActionRunning = ptrBool(false)
		ex.evidence.Incident.ActionEndedAt = at
		ex.evidence.Incident.ActionSeconds = round1(ran.Seconds())
		ex.evidence.Incident.ActionQueuedSeconds, ex.evidence.Incident.ActionQueuedBehind = ex.queued()
		ex.report.Incident = ex.evidence.Incident
		ex.report.Verdict = postmortem.Classify(ex.evidence, s.cfg.Thresholds)
		s.store(ex.report, at)
	}
}

// unfollow stops the stacks of a worker none of whose timed-out actions is followed any more.
func (s *state) unfollow(w *worker) {
	for _, ex := range s.dirty.execs {
		if ex.w == w && ex.ended.IsZero() && ex.noStack == "" {
			return
		}
	}
	if s.cfg.Follow != nil {
		s.cfg.Follow(w.id.PID, false)
	}
}

// execDue reports the execution timeouts whose window closed (all of them when final), and
// forgets those reported and ended.
func (s *state) execDue(now time.Time, final bool) {
	kept := s.dirty.execs[:0]
	for _, ex := range s.dirty.execs {
		if !ex.reported && (final || !now.Before(ex.due)) {
			s.reportExec(ex, now)
		}
		if !ex.reported || ex.ended.IsZero() && ex.noStack == "" && !ex.w.gone() {
			kept = append(kept, ex)
		}
	}
	for i := len(kept); i < len(s.dirty.execs); i++ {
		s.dirty.execs[i] = nil
	}
	s.dirty.execs = kept
}

// execPending reports whether an execution timeout waits for its window to close.
func (s *state) execPending() bool {
	for _, ex := range s.dirty.execs {
		if !ex.reported {
			return true
		}
	}
	return false
}

// reportExec writes an execution timeout's report.
func (s *state) reportExec(ex *execTimeout, now time.Time) {
	w := ex.w
	ex.reported = true
	pi := postmortem.Incident{Kind: postmortem.KindExecTimeout, PID: w.id.PID, StartTime: w.id.StartTime, At: ex.at, BootedAt: w.bootedAt,
		Role: postmortem.RoleDirty, DirtyApps: w.dirty.apps, Action: ex.call(), Lines: postmortem.RedactAll([]string{ex.line})}
	switch {
	case !ex.ended.IsZero():
		pi.ActionRunning, pi.ActionEndedAt = ptrBool(false), ex.ended
		pi.ActionSeconds = round1(ex.ended.Sub(ex.ran()).Seconds())
	case ex.stack != nil:
		pi.ActionRunning = ptrBool(true)
	}
	pi.ActionQueuedSeconds, pi.ActionQueuedBehind = ex.queued()
	pi.MemoryGrowth = s.memoryGrowth(ex.at)
	if st := ex.stack; st != nil {
		pi.PythonStack, pi.StackThread, pi.StackTop = st.Frames, st.Thread, st.Top
	} else if ex.noStack != "" {
		pi.StackError = ex.noStack
	}
	settings := s.settings
	if ex.seconds > 0 {
		settings.DirtyTimeout = ex.seconds // the timeout Gunicorn applied, as its line says
	}
	ex.evidence = postmortem.Evidence{Incident: pi, Settings: settings, Timeline: w.samples.list(), Deep: ex.deep,
		Container: s.containerAround(ex.at), Platform: s.cfg.Platform}
	ex.report = postmortem.NewReport(ex.evidence, postmortem.Classify(ex.evidence, s.cfg.Thresholds), s.version, now)
	s.publish(&ex.report, w, now)
}

// queued is how long the call waited behind another action before it ran (up to the line, while
// that action still runs), and that action.
func (ex *execTimeout) queued() (float64, string) {
	end := ex.ran()
	if ex.behind != nil {
		end = ex.at
	}
	if q := end.Sub(ex.started()); q > 0 && ex.behindCall != "" {
		return round1(q.Seconds()), ex.behindCall
	}
	return 0, ""
}

func ptrBool(b bool) *bool { return &b }
