package postmortem

import (
	"slices"
	"strings"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
)

// Facts are what the classifier measured of one incident: the worker over its last silence up
// to its last live sample, the container over the same span up to the death. Every figure a
// verdict quotes comes from here, so none is read off the exiting process or off the container
// after the victim's memory was freed.
type Facts struct {
	PID      int
	Kind     Kind
	Timeout  time.Duration // Gunicorn's --timeout (0 unknown)
	Class    string        // the worker class as given
	Async    bool          // gthread, gevent, eventlet, tornado, Uvicorn…: the worker runs an event loop or threads
	Platform string        // app_service, kubernetes, "" unknown
	MaxReqs  int           // --max-requests (0 off)

	// From Gunicorn's lines and the correlator.
	TimeoutLogged, BootStuck, Escalated, OOMHint, HandledAbort, Vanished bool
	TimeoutInferred                                                      bool // vanished stale past the timeout, with no line (Incident.TimeoutInferred)
	Signal                                                               string
	ExitCode                                                             *int
	OOMKillDelta                                                         uint64
	OOMShared                                                            []int  // other workers the same OOM kill may have been
	Exception                                                            string // the traceback's last line
	Where                                                                string // the app's innermost frame: stack_top, else the abort traceback's

	// The worker, over its silence, from live samples taken before the incident.
	Samples   int           // live samples in the silence
	Silence   time.Duration // the longest heartbeat age seen (−1 unknown)
	NeverBeat bool          // its last sample had never heartbeaten: still booting
	CPU       float64       // mean percent of one core (CPUKnown false: no rate was measured)
	CPUKnown  bool
	RunDelay  float64 // mean run-queue wait, percent of wall time
	Runnable  float64 // share of samples in state R
	BlockedIO float64 // share in state D
	States    string  // "sleeping 100%"
	PeakRSS   uint64  // the worker's peak resident memory over the silence
	RSSKnown  bool
	Swapping  bool    // its last live sample had swap while the worker sat in D
	Growth    *Growth // its memory grew markedly over the timeline
	// MemGrowth is the container's working set growing up to the incident (Incident.MemoryGrowth).
	MemGrowth *MemoryGrowth

	// The container over the silence, up to the death.
	HaveCgroup   bool   // the cgroup was sampled
	WSPeak       uint64 // the largest working set sampled (WSKnown false: none readable)
	WSKnown      bool
	Limit        uint64  // the memory limit, 0 when none or unreadable
	WSFrac       float64 // WSPeak / Limit
	RecordedPeak uint64  // the kernel's recorded peak usage (memory.max_usage_in_bytes / memory.peak)
	PeakKnown    bool
	MemPSI       float64
	PSIHost      bool
	Throttled    uint64  // nr_throttled increase
	Quota        float64 // CPU quota in cores, 0 none
	OOMKnown     bool    // the oom_kill counter could be read: "it did not move" means something

	Waiting    []string // what the last deep sample waited on: "tcp 10.0.0.5:5432", "unix /run/x.sock", "wchan ep_poll"
	Syscall    string
	Saturation *Saturation

	// Dirty workers (Gunicorn 25+): see Incident.
	Role          string
	Apps          []string
	Action        string
	ActionRunning *bool
	ActionEnded   time.Time
	ActionFor     time.Duration // how long the action ran in all, once it ended
	Queued        time.Duration // how long the call waited behind another action first
	QueuedBehind  string
	DirtyThreads  int
	Repeats       int
	Orphans       []int
	DirtyWait     *DirtyWait

	Requests []Request // the requests it was serving when it died (Incident.Requests)
}

// Growth is a worker's memory growing over its recorded timeline.
type Growth struct {
	From, To uint64        // its first sample's RSS, its peak's
	Over     time.Duration // from its last sample still near From to its peak: the growth took at most this
	Steady   bool          // it rose sample after sample and never fell back much: what a leak looks like
}

// live reports whether a worker sample shows the process alive before the incident: not at or
// after it, not a zombie or a dead task.
func live(s probes.Sample, at time.Time) bool {
	return s.Time.Before(at) && s.State != "Z" && s.State != "X"
}

// minWindow is the shortest span measured before a death.
const minWindow = 5 * time.Second

// measure takes the facts of one incident.
func measure(e Evidence) Facts {
	inc := e.Incident
	f := Facts{PID: inc.PID, Kind: inc.Kind, Timeout: time.Duration(e.Settings.Timeout) * time.Second, Class: string(gunicorn.ClassOf(e.Settings)),
		Async: gunicorn.ClassOf(e.Settings).Async(), Platform: e.Platform, MaxReqs: e.Settings.MaxRequests,
		TimeoutLogged: inc.Timeout, BootStuck: inc.BootStuck, Escalated: inc.Escalated, OOMHint: inc.OOMHint,
		HandledAbort: inc.HandledAbort, Vanished: inc.Vanished, TimeoutInferred: inc.TimeoutInferred, Signal: inc.Signal, ExitCode: inc.ExitCode,
		OOMKillDelta: inc.OOMKillDelta, OOMShared: inc.OOMShared, Exception: lastException(inc.Traceback), Where: inc.StackTop,
		Silence: -1, Saturation: e.Saturation, Requests: inc.Requests,
		MemGrowth: inc.MemoryGrowth}
	if f.Where == "" {
		f.Where = inc.StuckAt
	}
	f.Role, f.Apps, f.Action, f.ActionRunning, f.ActionEnded = inc.Role, inc.DirtyApps, inc.Action, inc.ActionRunning, inc.ActionEndedAt
	f.ActionFor = time.Duration(inc.ActionSeconds * float64(time.Second))
	f.Queued, f.QueuedBehind = time.Duration(inc.ActionQueuedSeconds*float64(time.Second)), inc.ActionQueuedBehind
	f.DirtyThreads, f.Repeats, f.Orphans, f.DirtyWait = e.Settings.DirtyThreads, inc.Repeats, inc.Orphans, inc.WaitingOnDirty
	if inc.Role == RoleDirty {
		f.Timeout = time.Duration(e.Settings.DirtyTimeout) * time.Second // what the arbiter judges it by
		f.Async = true                                                   // its event loop beats; actions run in threads
	}
	var alive []probes.Sample
	for _, s := range e.Timeline {
		if live(s, inc.At) {
			alive = append(alive, s)
		}
	}
	span := f.Timeout
	if n := len(alive); n > 0 {
		f.NeverBeat = alive[n-1].HeartbeatAge >= 0 && !alive[n-1].Heartbeats
		for _, s := range alive {
			if s.HeartbeatAge > f.Silence && inc.At.Sub(s.Time) < 2*span+10*time.Second {
				f.Silence = s.HeartbeatAge
			}
		}
		if f.Silence > 0 {
			span = f.Silence
		}
	}
	if span <= 0 {
		span = 30 * time.Second
	}
	// A worker that died while beating (an OOM kill mid-request) was silent for less than a
	// sample interval: its last moments are the last few seconds.
	span = max(span, minWindow)
	from := inc.At.Add(-span - time.Second)
	// What the worker did is judged on the second half of its silence: a sync worker's silence
	// starts at its last beat, before it waited (up to half the timeout) for the request, so the
	// first half can be idle however hard the request computed.
	lateFrom := from
	if f.Silence > time.Second {
		lateFrom = inc.At.Add(-f.Silence / 2)
	}
	if run := f.Timeout - f.Queued; inc.Kind == KindExecTimeout && run > 0 {
		// The worker kept beating: what counts is the action's run up to the line (--dirty-timeout,
		// less the time the call waited behind another action), judged on its second half like a
		// silence.
		from, lateFrom = inc.At.Add(-run-time.Second), inc.At.Add(-run/2)
	}
	var window, late []probes.Sample
	for _, s := range alive {
		if !s.Time.Before(from) {
			window = append(window, s)
		}
		if !s.Time.Before(lateFrom) {
			late = append(late, s)
		}
	}
	if len(late) < 2 {
		late = window
	}
	f.measureWorker(window, late)
	f.Growth = growth(alive)
	f.measureContainer(e.Container, from, inc.At)
	if e.Deep != nil {
		f.Waiting = e.Deep.WaitingOn()
		f.Syscall = e.Deep.Syscall
	}
	return f
}

// measureWorker takes the worker's peak memory over its whole silence (window) and what it was
// doing (CPU, run-queue wait, states) over the second half of it (late).
func (f *Facts) measureWorker(window, late []probes.Sample) {
	f.Samples = len(window)
	for _, s := range window {
		if !slices.Contains(s.Missing, "status") {
			f.PeakRSS, f.RSSKnown = max(f.PeakRSS, s.RSS()), true
		}
	}
	var cpuN int
	for _, s := range late {
		if !s.NoRates {
			f.CPU += s.CPUPercent()
			f.RunDelay += s.RunDelayPct
			cpuN++
		}
		switch s.State {
		case "R":
			f.Runnable++
		case "D":
			f.BlockedIO++
		}
	}
	if cpuN > 0 {
		f.CPU /= float64(cpuN)
		f.RunDelay /= float64(cpuN)
		f.CPUKnown = true
	}
	if n := float64(len(late)); n > 0 {
		f.Runnable /= n
		f.BlockedIO /= n
		f.States = stateMix(late)
		last := late[len(late)-1]
		f.Swapping = last.Swap > 0 && f.BlockedIO > 0.3
	}
}

// growth is the worker's memory over its live samples, when it grew markedly: by at least
// 64 MiB and by half.
func growth(alive []probes.Sample) *Growth {
	var known []probes.Sample
	for _, s := range alive {
		if !slices.Contains(s.Missing, "status") {
			known = append(known, s)
		}
	}
	if len(known) < 3 {
		return nil
	}
	first := known[0]
	peak := first
	for _, s := range known {
		if s.RSS() >= peak.RSS() {
			peak = s
		}
	}
	from, to := first.RSS(), peak.RSS()
	if to < from+64<<20 || float64(to) < 1.5*float64(from) {
		return nil
	}
	// Steady: no fall back by more than a tenth of the growth on the way to the peak. The growth
	// took at most the time from the last sample still at the start (within a fiftieth of the
	// growth, or 1 MiB) to the peak: a worker idle for minutes before one request grew in that
	// request, not since it booted.
	steady := true
	high := from
	start, still := first, from+max((to-from)/50, 1<<20)
	for _, s := range known {
		if s.Time.After(peak.Time) {
			break
		}
		high = max(high, s.RSS())
		if high-s.RSS() > (to-from)/10 {
			steady = false
		}
		if s.RSS() <= still {
			start = s
		}
	}
	return &Growth{From: from, To: to, Over: peak.Time.Sub(start.Time), Steady: steady}
}

// measureContainer reads the cgroup samples of the silence, up to the death: a sample after it
// shows the memory the kernel freed, not what the worker held. The kernel's recorded peak only
// ever rises, so it is read up to shortly after the death, when the counters have settled.
func (f *Facts) measureContainer(sts []memwatch.Stats, from, at time.Time) {
	var firstThrottled *uint64
	for _, st := range sts {
		f.OOMKnown = f.OOMKnown || st.OOMKill.Known
		if st.Time.After(at.Add(2 * time.Second)) {
			continue
		}
		f.HaveCgroup = true
		if st.Limit.Known {
			f.Limit = st.Limit.V // the limit rarely changes: the latest known, even before the silence
		}
		if st.Peak.Known && !st.Time.Before(from) && !st.Time.After(at.Add(2*time.Second)) {
			f.RecordedPeak, f.PeakKnown = max(f.RecordedPeak, st.Peak.V), true
		}
		if st.Time.Before(from) || st.Time.After(at) {
			continue
		}
		if st.WorkingSet.Known {
			f.WSPeak, f.WSKnown = max(f.WSPeak, st.WorkingSet.V), true
		}
		if st.PSI.Known && st.PSI.MemorySome10 > f.MemPSI {
			f.MemPSI, f.PSIHost = st.PSI.MemorySome10, st.PSI.HostWide
		}
		if st.CPUThrottled.Known {
			if firstThrottled == nil {
				v := st.CPUThrottled.V
				firstThrottled = &v
			} else if st.CPUThrottled.V > *firstThrottled {
				f.Throttled = st.CPUThrottled.V - *firstThrottled
			}
		}
		if st.CPUQuota.Known {
			f.Quota = st.CPUQuota.V
		}
	}
	if f.Limit > 0 && f.WSKnown {
		f.WSFrac = float64(f.WSPeak) / float64(f.Limit)
	}
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
