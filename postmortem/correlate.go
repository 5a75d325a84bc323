package postmortem

import (
	"sort"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
)

// Sources give the correlator the workers' histories, read when an incident is classified.
type Sources struct {
	History func(probes.ID) []probes.Sample
	Deep    func(probes.ID) (probes.Deep, bool)
}

// Correlator builds one incident per dead (or stuck) worker from Gunicorn's events, the worker
// watcher's events and the cgroup's OOM events, waits a bounded window for the follow-ups that
// come late (Gunicorn's SIGKILL a second after its timeout, the process vanishing, the v1
// oom_kill counter that moves after the victim is reaped), then classifies it. All methods are
// called from one goroutine; time is passed in.
type Correlator struct {
	settings gunicorn.Settings
	th       Thresholds
	src      Sources

	open      map[int]*pending        // by worker pid
	ids       map[int]probes.ID       // pid → identity, from the watcher
	booted    map[int]time.Time       // pid → boot time
	lastEvent map[int]probes.Event    // pid → the watcher's last event about it (for a vanish)
	done      map[probes.ID]time.Time // workers already reported (when): never two incidents for one
	doneLog   map[int]time.Time       // pids reported without an identity
	calm      map[int]time.Time       // pids that exited normally (Worker exiting without a timeout)
	quietTill time.Time               // a stop, reload or scale-down is under way: vanishes are normal

	oomPending []memwatch.OOMEvent // OOM kills not yet tied to a worker
	container  []memwatch.Stats    // bounded ring of cgroup samples
	version    string
	host       Host

	// tracebacks holds a worker's last "Exception in worker process" traceback until the line
	// that ends the worker (a boot failure's exit code 3 comes after it).
	tracebacks map[int]traceback
}

type traceback struct {
	lines []string
	at    time.Time
}

type pending struct {
	inc Incident
	due time.Time
	// tentative: the worker died while Gunicorn was stopping, reloading or scaling down (a
	// vanish, or its SIGKILL after graceful_timeout). It is reported only if the cgroup's
	// oom_kill counter moved with it; otherwise it was part of the stop.
	tentative bool
}

// containerKeep bounds the cgroup samples kept (10 minutes at 1 Hz).
const containerKeep = 600

// NewCorrelator starts with Gunicorn's effective settings.
func NewCorrelator(s gunicorn.Settings, th Thresholds, src Sources) *Correlator {
	if th.FollowUpWindow <= 0 {
		th.FollowUpWindow = DefaultThresholds().FollowUpWindow
	}
	return &Correlator{settings: s, th: th, src: src, open: map[int]*pending{}, ids: map[int]probes.ID{},
		booted: map[int]time.Time{}, lastEvent: map[int]probes.Event{}, done: map[probes.ID]time.Time{},
		doneLog: map[int]time.Time{}, calm: map[int]time.Time{}, tracebacks: map[int]traceback{}}
}

// Host is what a report says about where it was written.
type Host struct {
	Hostname     string `json:"hostname,omitempty"`
	GwrapVersion string `json:"gwrap_version,omitempty"`
	// Instance names the platform's instance where one is known (App Service's
	// WEBSITE_INSTANCE_ID, a Kubernetes pod name); never a secret.
	Instance string `json:"instance,omitempty"`
}

// SetHost sets what the reports say about the host and gwrap.
func (c *Correlator) SetHost(h Host) { c.host = h }

// get returns the open incident of a pid, opening one of the given kind when there is none and
// the worker was not reported already.
func (c *Correlator) get(pid int, kind Kind, now time.Time) *pending {
	if p := c.open[pid]; p != nil {
		return p
	}
	// A worker is known by its identity while the watcher knows it; after that (or without the
	// watcher), by its pid for a minute.
	if id, ok := c.ids[pid]; ok {
		if !c.done[id].IsZero() {
			return nil
		}
	} else if at, ok := c.doneLog[pid]; ok && now.Sub(at) < time.Minute {
		return nil
	}
	p := &pending{inc: Incident{Kind: kind, PID: pid, At: now, BootedAt: c.booted[pid]}, due: now.Add(c.th.FollowUpWindow)}
	if id, ok := c.ids[pid]; ok {
		p.inc.StartTime = id.StartTime
	}
	if tb, ok := c.tracebacks[pid]; ok {
		p.inc.Traceback = tb.lines
		delete(c.tracebacks, pid)
	}
	c.open[pid] = p
	return p
}

func (p *pending) extend(now time.Time, d time.Duration) {
	if t := now.Add(d); t.After(p.due) {
		p.due = t
	}
}

// Gunicorn takes one of Gunicorn's events.
func (c *Correlator) Gunicorn(ev gunicorn.Event, now time.Time) {
	pid := ev.WorkerPID
	switch ev.Kind {
	case gunicorn.KindStarting:
		c.version = ev.Version
	case gunicorn.KindUsingWorker:
		if ev.WorkerClass != "" {
			c.settings.WorkerClass = ev.WorkerClass
		}
	case gunicorn.KindBooting:
		c.booted[pid] = now
	case gunicorn.KindHandlingSignal:
		switch ev.SignalIn {
		case "term", "int", "quit", "hup", "ttou", "usr2", "winch":
			c.quietTill = now.Add(time.Duration(c.settings.GracefulTimeout)*time.Second + 5*time.Second)
		}
	case gunicorn.KindShuttingDown:
		c.quietTill = now.Add(time.Minute)
	case gunicorn.KindTimeout:
		if p := c.get(pid, KindTimeout, now); p != nil {
			p.inc.Kind, p.inc.Timeout = KindTimeout, true
			p.inc.Lines = append(p.inc.Lines, redact(ev.Line))
			p.extend(now, c.th.FollowUpWindow)
		}
	case gunicorn.KindWorkerExiting:
		if p := c.open[pid]; p != nil {
			p.inc.HandledAbort = p.inc.Timeout
			p.inc.Lines = append(p.inc.Lines, redact(ev.Line))
			return
		}
		c.calm[pid] = now
	case gunicorn.KindRequestError:
		if p := c.open[ev.PID]; p != nil {
			p.inc.Lines = append(p.inc.Lines, redact(ev.Line))
			p.inc.Traceback = redactAll(ev.Traceback)
			p.inc.StuckAt = redact(gunicorn.StuckAt(ev.Traceback))
		}
	case gunicorn.KindWorkerError:
		if p := c.open[ev.PID]; p != nil {
			p.inc.Traceback = redactAll(ev.Traceback)
		} else if ev.PID != 0 && len(ev.Traceback) > 0 {
			c.tracebacks[ev.PID] = traceback{redactAll(ev.Traceback), now}
		}
	case gunicorn.KindSignaled:
		if ev.Signal == 15 && c.open[pid] == nil {
			return // Gunicorn's own SIGTERM to an old worker: a reload or scale-down
		}
		// Gunicorn SIGKILLs the workers still running graceful_timeout after a stop (21.0+ logs
		// it as "Perhaps out of memory?"): part of the stop, unless the OOM killer moved.
		quiet := c.open[pid] == nil && now.Before(c.quietTill)
		if p := c.get(pid, KindSignal, now); p != nil {
			p.tentative = p.tentative || quiet
			if p.inc.Timeout && ev.Signal == 9 {
				p.inc.Escalated = true
			}
			p.inc.Signal, p.inc.OOMHint = ev.SignalName, ev.OOMHint
			p.inc.Lines = append(p.inc.Lines, redact(ev.Line))
			p.extend(now, c.th.FollowUpWindow/2)
		}
	case gunicorn.KindExited:
		if ev.Repeat {
			return
		}
		if p := c.open[pid]; p != nil {
			code := ev.ExitCode
			p.inc.ExitCode = &code
			p.inc.Lines = append(p.inc.Lines, redact(ev.Line))
			return
		}
		if ev.ExitCode == 0 {
			return
		}
		if p := c.get(pid, KindExit, now); p != nil {
			code := ev.ExitCode
			p.inc.ExitCode = &code
			p.inc.Lines = append(p.inc.Lines, redact(ev.Line))
		}
	}
}

// Probe takes one of the worker watcher's events.
func (c *Correlator) Probe(ev probes.Event, now time.Time) {
	pid := ev.ID.PID
	switch ev.Kind {
	case probes.EventBoot:
		c.ids[pid] = ev.ID
		if _, ok := c.booted[pid]; !ok {
			c.booted[pid] = now
		}
		delete(c.calm, pid)
	case probes.EventStuckBoot:
		if p := c.get(pid, KindTimeout, now); p != nil {
			p.inc.BootStuck = true
			p.inc.StartTime = ev.ID.StartTime
		}
	case probes.EventLate:
		c.lastEvent[pid] = ev
	case probes.EventVanish:
		c.lastEvent[pid] = ev
		if p := c.open[pid]; p != nil {
			p.inc.Vanished = true
			// The v1 oom_kill counter can lag the vanish a little.
			p.extend(now, 700*time.Millisecond)
			return
		}
		if _, ok := c.calm[pid]; ok || !c.done[ev.ID].IsZero() {
			delete(c.calm, pid)
			c.forget(ev.ID)
			return
		}
		// Gone without a line (log level, ≤ 20.0, or the line comes later): an incident of its
		// own, which the lines and counters arriving in the window complete. During a stop or
		// reload it counts only if the OOM killer took it.
		if p := c.get(pid, KindSignal, now); p != nil {
			p.inc.Vanished = true
			p.inc.StartTime = ev.ID.StartTime
			p.tentative = now.Before(c.quietTill)
		}
	}
}

// OOM takes an OOM-kill event of the container's cgroup.
func (c *Correlator) OOM(ev memwatch.OOMEvent, now time.Time) {
	c.oomPending = append(c.oomPending, ev)
	for _, p := range c.open {
		p.extend(now, 500*time.Millisecond)
	}
}

// Container takes a cgroup sample.
func (c *Correlator) Container(st memwatch.Stats) {
	// Compact only when twice the bound is reached: one copy per containerKeep samples.
	if len(c.container) >= 2*containerKeep {
		c.container = append(c.container[:0], c.container[len(c.container)-containerKeep+1:]...)
	}
	c.container = append(c.container, st)
}

// Due classifies the incidents whose window has passed.
func (c *Correlator) Due(now time.Time) []Report { return c.finish(now, false) }

// Flush classifies every open incident (at shutdown).
func (c *Correlator) Flush(now time.Time) []Report { return c.finish(now, true) }

func (c *Correlator) finish(now time.Time, all bool) []Report {
	var ready []*pending
	for pid, p := range c.open {
		// A timeout whose worker is still alive waits for it to vanish (Gunicorn's SIGKILL),
		// up to three windows; a stuck boot is reported at once.
		waitVanish := p.inc.Timeout && !p.inc.Vanished && !p.inc.BootStuck && now.Before(p.inc.At.Add(3*c.th.FollowUpWindow))
		if all || (!now.Before(p.due) && !waitVanish) {
			ready = append(ready, p)
			delete(c.open, pid)
		}
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i].inc.At.Before(ready[j].inc.At) })
	var out []Report
	for _, p := range ready {
		if r, ok := c.report(p, now); ok {
			out = append(out, r)
		}
	}
	c.prune(now)
	// OOM events no incident claimed within a minute are dropped (a non-worker process died).
	kept := c.oomPending[:0]
	for _, ev := range c.oomPending {
		if now.Sub(ev.Time) < time.Minute {
			kept = append(kept, ev)
		}
	}
	c.oomPending = kept
	return out
}

// memory bounds what the correlator remembers of workers that are gone: long enough for the
// late lines about them, short enough that max-requests recycling thousands of workers a day
// does not grow gwrap.
const memory = 5 * time.Minute

// forget drops what is known of a worker that is gone (unless its pid is already another's).
func (c *Correlator) forget(id probes.ID) {
	if cur, ok := c.ids[id.PID]; ok && cur != id {
		return
	}
	delete(c.ids, id.PID)
	delete(c.booted, id.PID)
	delete(c.lastEvent, id.PID)
}

// prune drops the memories older than their use.
func (c *Correlator) prune(now time.Time) {
	for id, at := range c.done {
		if now.Sub(at) > memory {
			delete(c.done, id)
		}
	}
	for pid, at := range c.doneLog {
		if now.Sub(at) > time.Minute {
			delete(c.doneLog, pid)
		}
	}
	for pid, at := range c.calm {
		if now.Sub(at) > memory {
			delete(c.calm, pid)
		}
	}
	for pid, tb := range c.tracebacks {
		if now.Sub(tb.at) > time.Minute {
			delete(c.tracebacks, pid)
		}
	}
}

// report classifies one incident; ok is false for a tentative one the OOM killer did not take.
func (c *Correlator) report(p *pending, now time.Time) (r Report, ok bool) {
	inc := p.inc
	id, known := c.ids[inc.PID]
	if known && id.StartTime != inc.StartTime && inc.StartTime != 0 {
		id = probes.ID{PID: inc.PID, StartTime: inc.StartTime}
	}
	// Claim an OOM kill that happened around this worker's end.
	if inc.OOMKillDelta == 0 && (inc.Signal == "" || inc.Signal == "SIGKILL") && !inc.HandledAbort && inc.ExitCode == nil {
		for i, ev := range c.oomPending {
			if d := ev.Time.Sub(inc.At); d > -5*time.Second && d < 5*time.Second {
				inc.OOMKillDelta = ev.Count
				c.oomPending = append(c.oomPending[:i], c.oomPending[i+1:]...)
				break
			}
		}
	}
	if inc.OOMKillDelta > 0 && !inc.Timeout {
		inc.Kind = KindOOMKill
	}
	c.doneLog[inc.PID] = now
	if known {
		c.done[id] = now
		defer c.forget(id)
	}
	if p.tentative && inc.OOMKillDelta == 0 {
		return Report{}, false
	}
	ev := Evidence{Incident: inc, Settings: c.settings}
	if known {
		if c.src.History != nil {
			ev.Timeline = c.src.History(id)
		}
		if c.src.Deep != nil {
			if d, ok := c.src.Deep(id); ok {
				ev.Deep = &d
			}
		}
	}
	if ev.Deep == nil {
		if last, ok := c.lastEvent[inc.PID]; ok && last.Deep != nil {
			ev.Deep = last.Deep
		}
	}
	ev.Container = c.containerAround(inc.At)
	r = newReport(ev, Classify(ev, c.th), c.version, now)
	r.Host = c.host
	if h := idSafe(c.host.Hostname); h != "" {
		// Instances of one App Service app share /home: the host keeps their ids apart.
		r.ID += "-" + h
	}
	return r, true
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

// containerAround returns the cgroup samples of the minutes before t.
func (c *Correlator) containerAround(t time.Time) []memwatch.Stats {
	var out []memwatch.Stats
	for _, st := range c.container {
		if st.Time.After(t.Add(-5*time.Minute)) && st.Time.Before(t.Add(5*time.Second)) {
			out = append(out, st)
		}
	}
	return out
}
