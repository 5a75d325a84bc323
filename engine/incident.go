package engine

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// incident is one worker's end (or stuck boot) while it is tentative: opened by the first sign,
// completed by what follows within the window, then confirmed and reported, or dismissed.
type incident struct {
	w      *worker
	at     time.Time // the first sign
	due    time.Time // when the window closes
	opened time.Time

	timeout    bool      // a verified WORKER TIMEOUT
	beatAt     time.Time // its worker beat after the line (zero: not seen)
	stuck      bool      // seen stuck booting
	signal     int
	signalName string
	oomHint    bool
	exitCode   *int
	oomKills   uint64
	oomShared  []int // the other workers that died as the counter moved, when gwrap cannot tell which the kernel killed

	lines     []string
	traceback []string
	bootError bool   // the traceback is the worker's "Exception in worker process"
	stuckAt   string // the app's frame in an aborted request's traceback
}

func (inc *incident) died() bool { return inc.w.gone() || inc.signal != 0 || inc.exitCode != nil }

func (inc *incident) extend(now time.Time, d time.Duration) {
	if t := now.Add(d); t.After(inc.due) {
		inc.due = t
	}
}

// incidentFor returns the worker's open incident, opening one at the first sign.
func (s *state) incidentFor(w *worker, at time.Time) *incident {
	if w.inc != nil {
		return w.inc
	}
	inc := &incident{w: w, at: at, opened: at, due: at.Add(s.cfg.Thresholds.FollowUpWindow)}
	w.inc = inc
	s.open = append(s.open, inc)
	return inc
}

// traceback keeps a worker's traceback for its incident (which may open only with the exit line).
func (s *state) traceback(w *worker, e gunicorn.Event, at time.Time) {
	inc := w.inc
	if inc == nil {
		if e.Kind != gunicorn.KindWorkerError || len(e.Traceback) == 0 {
			return
		}
		// A boot failure: the traceback comes first, the exit code after it.
		inc = s.incidentFor(w, at)
	}
	inc.lines = append(inc.lines, e.Line)
	inc.traceback = e.Traceback
	inc.bootError = e.Kind == gunicorn.KindWorkerError
	if e.Kind == gunicorn.KindRequestError {
		inc.stuckAt = gunicorn.StuckAt(e.Traceback)
	}
}

// facts gathers what decide looks at.
func (s *state) facts(inc *incident, final bool) facts {
	w := inc.w
	lvl := strings.ToLower(s.settings.LogLevel)
	if lvl == "" {
		lvl = "info"
	}
	stopping := false
	if !w.stopAt.IsZero() {
		if w.gone() {
			stopping = w.stoppingAt(w.goneAt)
		} else {
			stopping = w.stopEnd.IsZero() || inc.at.Before(w.stopEnd)
		}
	}
	return s.dirtyFacts(inc, facts{
		OOMKilled: inc.oomKills > 0,
		OOMShared: len(inc.oomShared) > 0,
		Timeout:   inc.timeout,
		StuckBoot: inc.stuck,
		Died:      w.gone(),
		Signal:    inc.signal,
		ExitCode:  inc.exitCode,
		Exiting:   w.exiting,
		Stopping:  stopping || (!s.shutdown.IsZero() && (!w.gone() || !s.shutdown.After(w.goneAt))),
		// A normal exit would have said so only if this worker's INFO lines reach gwrap: its own
		// boot line did (not with --error-logfile FILE, a custom logger, a higher log level).
		ExitsVisible: (lvl == "info" || lvl == "debug") && s.settings.LogConfig == "" && s.settings.Sources["loglevel"] != gunicorn.SourceUnknown && w.bootLine,
		StaleAtDeath: s.staleAtDeath(w),
		BootFailure:  inc.bootError && (s.bootFailure != "" || inc.exitCode != nil && (*inc.exitCode == 3 || *inc.exitCode == 4)),
		Final:        final,
	})
}

// staleAtDeath reports whether a gone worker's heartbeat was stale past Gunicorn's timeout when
// it vanished: its last sample's silence, plus the time from that sample to the vanish, reaches
// the timeout, and that sample was already past three quarters of it (a late worker is sampled
// ten times a second; an idle sync worker beats every timeout/2).
func (s *state) staleAtDeath(w *worker) bool {
	t := s.timeout()
	last, ok := w.samples.last()
	if !w.gone() || t <= 0 || !ok || last.HeartbeatAge < 0 || !last.Heartbeats {
		return false
	}
	return last.HeartbeatAge >= t*3/4 && last.HeartbeatAge+w.goneAt.Sub(last.Time) >= t
}

// waiting reports whether an incident's window must stay open past its due time: a timed-out
// worker Gunicorn has not finished off yet (for up to three windows), a worker still stuck booting.
func (s *state) waiting(inc *incident, now time.Time) bool {
	if (len(s.ooms) > 0 || s.oomCount.pending()) && (inc.w.gone() || !inc.w.endAt.IsZero()) {
		return true // a dead worker may be the victim of a move not placed yet (for up to oomSettle, or oomEventWait)
	}
	if inc.w.gone() {
		return false
	}
	if inc.timeout && inc.signal == 0 && inc.exitCode == nil {
		return now.Before(inc.at.Add(3 * s.cfg.Thresholds.FollowUpWindow))
	}
	return inc.stuck && !inc.timeout
}

// decideDue decides the incidents whose window has closed (all of them when final).
func (s *state) decideDue(now time.Time, final bool) {
	var ready []*incident
	kept := s.open[:0]
	for _, inc := range s.open {
		if final || (!now.Before(inc.due) && !s.waiting(inc, now)) {
			ready = append(ready, inc)
		} else {
			kept = append(kept, inc)
		}
	}
	for i := len(kept); i < len(s.open); i++ {
		s.open[i] = nil
	}
	s.open = kept
	sort.Slice(ready, func(i, j int) bool { return ready[i].at.Before(ready[j].at) })
	for _, inc := range ready {
		if inc.timeout && s.alive(inc.w) {
			// Gunicorn kills a worker it timed out within a second or two (SIGABRT, then
			// SIGKILL): one /proc still shows alive now was not timed out, whoever wrote the line.
			s.unverifiedText(fmt.Sprintf("WORKER TIMEOUT (pid:%d)", inc.w.id.PID), now, "the worker it names is still alive")
			if !inc.stuck {
				inc.w.inc = nil
				continue
			}
			inc.timeout, inc.lines = false, nil // still stuck booting: that incident stays open
		}
		confirmed, kind := decide(s.facts(inc, final))
		if inc.stuck && !confirmed && !final {
			s.open = append(s.open, inc) // still booting: stays open
			continue
		}
		inc.w.inc = nil
		if confirmed && !inc.w.reported {
			inc.w.reported = true
			s.report(inc, kind, now)
		}
	}
}

// dismiss drops an open incident before its window closed (a stuck boot that finished).
func (s *state) dismiss(inc *incident) {
	inc.w.inc = nil
	for i, o := range s.open {
		if o == inc {
			s.open = append(s.open[:i], s.open[i+1:]...)
			return
		}
	}
}

// report classifies a confirmed incident, writes its report and announces it.
func (s *state) report(inc *incident, kind postmortem.Kind, now time.Time) {
	w := inc.w
	pi := postmortem.Incident{Kind: kind, PID: w.id.PID, StartTime: w.id.StartTime, At: inc.at, BootedAt: w.bootedAt,
		Signal: inc.signalName, ExitCode: inc.exitCode, Timeout: inc.timeout, HandledAbort: inc.timeout && w.exiting,
		Escalated: inc.timeout && inc.signal == 9, OOMHint: inc.oomHint, OOMKillDelta: inc.oomKills, OOMShared: inc.oomShared,
		BootStuck: inc.stuck, Vanished: w.gone(), TimeoutInferred: kind == postmortem.KindTimeout && !inc.timeout && !inc.stuck,
		Lines: postmortem.RedactAll(inc.lines), Traceback: postmortem.RedactAll(inc.traceback), StuckAt: postmortem.Redact(inc.stuckAt)}
	if st := s.stackOf(inc); st != nil {
		pi.PythonStack, pi.StackThread, pi.StackTop = st.Frames, st.Thread, st.Top
		if len(st.Frames) == 0 && st.Err != "" {
			pi.StackError = "no stack: " + st.Err
		}
	}
	if s.cfg.Requests != nil && w.dirty == nil {
		pi.Requests, pi.RequestsError = s.cfg.Requests(w.id, inc.at)
	}
	s.dirtyIncident(inc, &pi)
	if inc.oomKills > 0 {
		pi.Recycling = s.recycling(inc.at)
	}
	pi.MemoryGrowth = s.memoryGrowth(inc.at) // kept by the report for a memory verdict only
	evidence := postmortem.Evidence{Incident: pi, Settings: s.settings, Timeline: w.samples.list(), Deep: w.deep,
		Container: s.containerAround(inc.at), Platform: s.cfg.Platform, Saturation: saturation(w.load)}
	r := postmortem.NewReport(evidence, postmortem.Classify(evidence, s.cfg.Thresholds), s.version, now)
	s.publish(&r, w, now)
}

// publish writes a report (its id made unique to the host) and announces it.
func (s *state) publish(r *postmortem.Report, w *worker, now time.Time) string {
	r.Host = s.cfg.Host
	if h := idSafe(s.cfg.Host.Hostname); h != "" && !strings.HasSuffix(r.ID, "-"+h) {
		// Instances of one App Service app share /home: the host keeps their ids apart.
		r.ID += "-" + h
	}
	s.reported++
	path := s.store(*r, now)
	v := r.Verdict
	s.emit(ev(now, Error, "postmortem", v.Summary, append([]Field{f("cause", string(v.Cause)), f("pid", w.id.PID),
		f("kind", string(r.Incident.Kind)), f("near_memory_limit", v.NearMemoryLimit), f("ran_long", v.RanLong),
		f("confidence", v.Confidence), f("summary", v.Summary), f("report", path), f("id", r.ID)}, append(s.reportFields(r), requestFields(r)...)...)...).
		with(Verdict{Cause: string(v.Cause), PID: w.id.PID, Summary: v.Summary, ExecTimeout: r.Incident.Kind == postmortem.KindExecTimeout, Role: r.Incident.Role}))
	return path
}

// store writes a report; a failure is said once. Its key is not the report writer's
// ("report-write", said by gwrap's disk queue when a write fails): a store that refuses a report
// (a queue full) is a failure of its own, said once besides.
func (s *state) store(r postmortem.Report, now time.Time) string {
	if s.cfg.Reports == nil {
		return ""
	}
	p, err := s.cfg.Reports.Write(r)
	if err != nil {
		s.warnOnce("report-store", now, "report_write", "cannot write post-mortem reports: "+err.Error()+" (they still appear on stdout)")
	}
	return p
}

// saturation sums up the server's load over a worker's silence: whether every worker was busy at
// every late event, how long the listen queue grew and whether it rose.
func saturation(load []probes.Saturation) *postmortem.Saturation {
	var out *postmortem.Saturation
	for i, l := range load {
		if !l.BusyKnown || len(l.Listeners) == 0 {
			continue
		}
		q := int(l.Queued())
		if out == nil {
			out = &postmortem.Saturation{AllWorkersBusy: true}
		}
		out.AllWorkersBusy = out.AllWorkersBusy && l.Workers > 0 && l.Busy >= l.Workers
		if q > out.QueueMax {
			out.QueueMax = q
		}
		if i > 0 && q > int(load[0].Queued()) {
			out.QueueRose = true
		}
		for _, li := range l.Listeners {
			if li.MaxKnown && int(li.Max) > out.Backlog {
				out.Backlog = int(li.Max)
			}
		}
	}
	return out
}

// stackOf is the Python stack for a report: the one taken while the worker was late or stuck, or
// the dump a crashing worker left.
func (s *state) stackOf(inc *incident) *probes.PyStack {
	if st := inc.w.stack; st != nil && len(st.Frames) > 0 {
		return st
	}
	if inc.signal != 0 && inc.signal != 9 && s.cfg.CrashStack != nil {
		if st := s.cfg.CrashStack(inc.w.id.PID); st != nil && len(st.Frames) > 0 {
			return st
		}
	}
	return inc.w.stack
}

// containerAround returns the cgroup samples of the minutes before t (and a few seconds after).
func (s *state) containerAround(t time.Time) []memwatch.Stats {
	var out []memwatch.Stats
	for _, st := range s.cgroup {
		if st.Time.After(t.Add(-5*time.Minute)) && st.Time.Before(t.Add(5*time.Second)) {
			out = append(out, st)
		}
	}
	return out
}

// idSafe keeps the characters of s that are safe in a file name, at most 40.
func idSafe(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(b) < 40; i++ {
		if c := s[i]; c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b = append(b, c)
		}
	}
	return string(b)
}

// requestFields are a post-mortem event's requests: those the worker was serving when it died,
// each "GET /path from 10.0.0.7, running 31.2 s" (none when there were none to tell).
func requestFields(r *postmortem.Report) []Field {
	reqs := r.Incident.Requests
	if len(reqs) == 0 {
		return nil
	}
	named := make([]string, len(reqs))
	for i, q := range reqs {
		named[i] = q.Running()
	}
	return []Field{f("requests", named)}
}
