package engine

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/forecast"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
	"github.com/gwrap/gwrap/recycle"
)

// state is everything the engine's goroutine owns. Its methods take the time things happened;
// they never read a clock, so tests drive them with any times they like.
type state struct {
	cfg      Config
	out      Emitter
	settings gunicorn.Settings
	version  string // Gunicorn's, from its "Starting gunicorn" line

	classFromLog string // the worker class Gunicorn's "Using worker:" line named

	root    int          // the supervised command's pid
	master  int          // the Gunicorn master's pid (0 until the watcher or the root's own lines show it)
	masters map[int]bool // every master the watcher found: the first and those found among a master's children (USR2)
	found   bool         // the watcher found a master (the root's own start line is not enough)
	// firstLine is when Gunicorn's first line came (a start, boot or signal line from some pid):
	// from then on the watcher should find the master within masterGrace.
	firstLine time.Time
	// linesSeen: a line of Gunicorn's own format came from a master or a worker the watcher found.
	linesSeen bool
	startPIDs []int             // the pids of the last start lines, until the watcher finds the master
	bootSeen  map[int]time.Time // boot lines of workers the watcher had not found (bootPending)
	w         workers
	open      []*incident
	asm       map[string]*gunicorn.Assembler
	cgroup    []memwatch.Stats // the last containerKeep cgroup samples
	ooms      []*oomKill       // moves of the oom_kill counter whose victims are not all named yet
	unnamed   []unnamedOOM     // the kills of the last seconds' moves that no worker took
	masterOOM uint64           // the command's SIGKILL was an OOM kill (this many kills unnamed)
	oomCount  oomCounter       // the counter as the events and the sweep read it (oom_sampled.go)
	shutdown  time.Time        // Gunicorn was told to stop (TERM, INT, QUIT) or said it is

	bootFailure string // the master's "Reason:" line (Worker failed to boot, App failed to load)
	warned      map[string]bool
	reported    int

	dirty dirtyState // Gunicorn 25+'s dirty arbiter and its workers (dirty.go)

	rec *recycle.Recycler // nil: recycling is off (recycle.go)
	fc  *forecast.Tracker // the container's growth, for memory.forecast (forecast.go)
}

// containerKeep bounds the cgroup samples kept (10 minutes at 1 Hz).
const containerKeep = 600

func newState(cfg Config, out Emitter) *state {
	// Room for the whole history at the normal rate plus 30 s of a late worker's fast samples.
	capacity := int(cfg.History/cfg.Interval) + 300
	s := &state{cfg: cfg, out: out, settings: cfg.Settings, w: newWorkers(capacity),
		asm: map[string]*gunicorn.Assembler{}, warned: map[string]bool{}, masters: map[int]bool{}, dirty: newDirtyState(cfg.Settings)}
	if cfg.Recycle.On() {
		s.rec = recycle.New(cfg.Recycle)
	}
	s.fc = forecast.New(forecast.Options{})
	return s
}

func (s *state) emit(e Event) { s.out.Emit(e) }

// warnOnce says a degradation once: the outputs' one registry (output.Writer) drops a key said
// before, whoever said it first (the engine or gwrap's start-up). warned only notes what the
// engine said, for its timer (busy, findingChecks).
func (s *state) warnOnce(key string, at time.Time, code, msg string) {
	s.warned[key] = true
	s.emit(ev(at, Warn, "config.warning", msg, f("code", code)).with(Warning{Key: key, Code: code}))
}

// setSettings takes Gunicorn's settings read from its master; a worker class its log named wins.
func (s *state) setSettings(n gunicorn.Settings) {
	if s.classFromLog != "" {
		n.WorkerClass = s.classFromLog
	}
	s.settings = n
	if n.DirtyWorkers > 0 && len(n.DirtyApps) > 0 {
		s.dirty.on = true
	}
	s.tell()
}

// tell tells the watcher what it judges the workers against (Config.OnLimits), read with
// Gunicorn's rules, and the outputs the settings the engine holds (Config.OnSettings).
func (s *state) tell() {
	if s.cfg.OnLimits != nil {
		t := s.timeout()
		s.cfg.OnLimits(probes.Limits{Timeout: t, Beat: gunicorn.ClassOf(s.settings).Heartbeat(t), Dirty: s.dirty.on, DirtyTimeout: s.dirtyTimeout()})
	}
	if s.cfg.OnSettings != nil {
		s.cfg.OnSettings(s.settings)
	}
}

func (s *state) timeout() time.Duration { return time.Duration(s.settings.Timeout) * time.Second }

// parseMax is how much of a line is parsed: Gunicorn's own lines are short, a traceback is kept
// up to 64 KiB, and a line of megabytes must not be copied again for the parser (the relay
// writes the whole line from its bytes; the parsed message of such a line is its start).
const parseMax = 64 << 10

// limitOf is the timeout a worker is held to: --timeout, or --dirty-timeout for a dirty worker.
func (s *state) limitOf(w *worker) time.Duration {
	if isDirty(w) {
		return time.Duration(s.settings.DirtyTimeout) * time.Second
	}
	return s.timeout()
}

// line relays one line of the child's output and takes in what it says.
func (s *state) line(stream string, b []byte, at time.Time) {
	a := s.asm[stream]
	if a == nil {
		a = gunicorn.NewAssembler(200, 64<<10)
		s.asm[stream] = a
	}
	parsed, done := a.Add(b[:min(len(b), parseMax)])
	s.out.Relay(stream, b, parsed, at)
	for _, e := range done {
		s.gunicorn(e, at)
	}
}

// fromMaster reports whether a line was written by a Gunicorn master (the first one, or one
// found among a master's children after a USR2 upgrade).
func (s *state) fromMaster(e gunicorn.Event) bool {
	return e.PID > 0 && (e.PID == s.master || s.masters[e.PID])
}

// gunicorn takes one complete event of Gunicorn's log.
func (s *state) gunicorn(e gunicorn.Event, at time.Time) {
	if s.master == 0 && s.root != 0 && e.PID == s.root && (e.Kind == gunicorn.KindStarting || e.Kind == gunicorn.KindListening) {
		s.master = s.root // Gunicorn itself is the command: its master speaks before the first sweep
	}
	s.noteLine(e, at)
	switch e.Kind {
	case gunicorn.KindStarting:
		if s.master == 0 || s.fromMaster(e) {
			s.version = e.Version
			s.emit(ev(at, Info, "gunicorn.start", "Gunicorn "+e.Version+" starting", f("gunicorn_version", e.Version)).with(GunicornVersion{Version: e.Version}))
		}
	case gunicorn.KindUsingWorker:
		if c := string(gunicorn.LoggedClass(e.WorkerClass)); (s.master == 0 || s.fromMaster(e)) && c != "" && c != s.settings.WorkerClass {
			s.settings.WorkerClass, s.classFromLog = c, c
			s.tell()
		}
	case gunicorn.KindBooting:
		// A worker announces itself; the watcher may not have seen it yet (a boot failure can be
		// over before the next sweep).
		if e.PID > 0 && e.PID == e.WorkerPID {
			s.bootLine(e.PID, at)
		}
	case gunicorn.KindHandlingSignal:
		if s.fromMaster(e) {
			s.told(e.PID, e.SignalIn, at)
		}
	case gunicorn.KindShuttingDown:
		if s.fromMaster(e) {
			s.told(e.PID, "term", at)
		}
	case gunicorn.KindReason:
		if s.fromMaster(e) {
			s.bootFailure = e.Reason
		}
	case gunicorn.KindAutorestart, gunicorn.KindWorkerExiting:
		pid := e.PID
		if e.Kind == gunicorn.KindWorkerExiting && e.WorkerPID != 0 {
			if e.PID != 0 && e.PID != e.WorkerPID {
				return // a worker speaks only for itself
			}
			pid = e.WorkerPID
		}
		if w := s.w.known(pid); w != nil {
			w.stop(at, time.Time{})
			if e.Kind == gunicorn.KindWorkerExiting {
				w.exiting = true
			}
			s.addLine(w, e)
		}
	case gunicorn.KindGracefulTimeout:
		if w := s.w.known(e.WorkerPID); w != nil && s.fromMaster(e) {
			w.stop(at, time.Time{})
		}
	case gunicorn.KindRequestError, gunicorn.KindWorkerError:
		// The worker's own traceback: where an aborted request was stuck (22+), or why it could
		// not boot. Kept on the record: its incident may open only with the exit line.
		if w := s.w.known(e.PID); w != nil {
			s.traceback(w, e, at)
		}
	case gunicorn.KindTimeout, gunicorn.KindSignaled, gunicorn.KindExited:
		s.killLine(e, at)
	default:
		if e.IsDirty() {
			s.dirtyLine(e, at)
		}
	}
}

// bootLine takes a worker's "Booting worker with pid: N", written by N itself. The app can print
// any number of such lines: a record is made only for a pid /proc shows as a child of a master
// (or, until the master is found, of the command), with its start time. Either way the line says
// the worker's INFO lines reach gwrap (worker.bootLine): a worker the watcher has not found yet
// and /proc cannot place (its master is not found yet: a shell in front) is remembered by its
// pid, a few at most, until the watcher finds it.
func (s *state) bootLine(pid int, at time.Time) {
	if w := s.w.known(pid); w != nil && !w.gone() {
		s.w.logged(w.id, at) // the watcher found it first
		return
	}
	if s.cfg.Fate != nil {
		f := s.cfg.Fate(probes.ID{PID: pid})
		if f.Gone {
			return
		}
		if f.PPID > 0 && (f.PPID == s.master || s.masters[f.PPID] || !s.found && f.PPID == s.root) {
			w := s.w.logged(f.ID, at)
			if w.master == 0 {
				w.master = f.PPID
			}
			return
		}
	}
	s.bootPending(pid, at)
}

// bootLines bounds the boot lines of workers not found yet that gwrap remembers; bootLineKeep is
// how long it remembers one (the watcher finds the master within masterGrace of its first line,
// and its workers at its next sweep).
const (
	bootLines    = 64
	bootLineKeep = 30 * time.Second
)

// bootPending remembers that pid's boot line came at at, for when the watcher finds it. Under a
// flood of such lines the oldest are forgotten: a worker whose line was forgotten is judged from
// /proc alone, as if its lines did not reach gwrap.
func (s *state) bootPending(pid int, at time.Time) {
	if s.bootSeen == nil {
		s.bootSeen = map[int]time.Time{}
	}
	for p, t := range s.bootSeen {
		if at.Sub(t) > bootLineKeep {
			delete(s.bootSeen, p)
		}
	}
	if _, ok := s.bootSeen[pid]; !ok && len(s.bootSeen) >= bootLines {
		oldest := 0
		for p, t := range s.bootSeen {
			if oldest == 0 || t.Before(s.bootSeen[oldest]) {
				oldest = p
			}
		}
		delete(s.bootSeen, oldest)
	}
	s.bootSeen[pid] = at
}

// told takes a master's word that it was told sig ("Handling signal: hup", "Shutting down"): the
// workers that signal stops are stopping, their deaths and their silence part of that stop, not
// incidents — and only they, and only for as long as the stop can last. A signal that stops no
// worker (WINCH, which Gunicorn ignores unless daemonized; TTIN; USR1; USR2, whose new master
// leaves the old workers serving) marks none. A signal gwrap forwarded counts through this line,
// or when gwrap sent it to the master itself (signal): forwarded to a shell that does not pass it
// on, it stops nothing.
func (s *state) told(master int, sig string, at time.Time) {
	var ws []*worker
	for _, w := range s.w.live() {
		if w.master == master || (w.master == 0 && master == s.master) {
			ws = append(ws, w)
		}
	}
	// How long a stop can take: Gunicorn's graceful timeout, and a margin for the reaping.
	end := at.Add(time.Duration(max(s.settings.GracefulTimeout, 0))*time.Second + stopMargin)
	switch strings.ToLower(strings.TrimPrefix(strings.ToUpper(sig), "SIG")) {
	case "term", "int", "quit":
		// This master stops with all its workers. It is Gunicorn's whole shutdown unless another
		// master serves on (a USR2 upgrade ending with the old master's stop).
		if master == s.master && len(s.masters) <= 1 && s.shutdown.IsZero() {
			s.shutdown = at
		}
		for _, w := range ws {
			w.stop(at, time.Time{})
		}
	case "hup":
		// A reload replaces every worker of this master: the ones alive now stop.
		for _, w := range ws {
			if w.bootedAt.Before(at) {
				w.stop(at, end)
			}
		}
	case "ttou":
		// One worker fewer, never below one: Gunicorn stops its oldest.
		if len(ws) > 1 {
			sort.Slice(ws, func(i, j int) bool {
				if !ws[i].bootedAt.Equal(ws[j].bootedAt) {
					return ws[i].bootedAt.Before(ws[j].bootedAt)
				}
				return ws[i].id.StartTime < ws[j].id.StartTime
			})
			ws[0].stop(at, end)
		}
	}
}

// stopMargin is added to Gunicorn's graceful timeout for how long a stop can last.
const stopMargin = 5 * time.Second

// killLine takes a WORKER TIMEOUT, a death by signal or an exit code: believed only when the
// master wrote it about a worker gwrap knows (and, for a timeout, the heartbeat was stale).
func (s *state) killLine(e gunicorn.Event, at time.Time) {
	if e.Kind == gunicorn.KindExited && e.Repeat {
		return
	}
	w := s.w.known(e.WorkerPID)
	if w != nil && w.dirty != nil {
		w = nil // the master speaks of its HTTP workers only (the arbiter of the dirty ones)
	}
	attributed := s.fromMaster(e)
	// A line without Gunicorn's prefix (a custom log format) cannot be attributed: it may
	// complete what /proc already showed, never start an incident.
	unprefixed := e.PID == 0 && w != nil && w.inc != nil
	if w == nil || !(attributed || unprefixed) {
		s.unverified(e, at, "it does not come from the Gunicorn master about one of its workers")
		return
	}
	if e.Kind != gunicorn.KindTimeout {
		// The master writes its signal and exit lines once it has reaped the worker: a worker
		// /proc still shows alive did not die, whoever wrote the line.
		if s.alive(w) {
			s.unverified(e, at, "the worker it names is alive")
			return
		}
		w.endAt = minTime(w.endAt, at)
		s.settleHeldLine(w, probes.Sample{}, true) // a held timeout line came first
	}
	switch e.Kind {
	case gunicorn.KindTimeout:
		// A worker younger than the timeout cannot have timed out; one whose heartbeat gwrap
		// reads must have been silent. Only when the heartbeat cannot be read (workers under
		// another uid) is the master's word taken alone.
		stale, known := s.heartbeatStale(w, at)
		old := s.timeout() > 0 && at.Sub(w.bootedAt) >= s.timeout()-time.Second
		if !stale && known && attributed && s.couldBeStale(w, at) {
			// The samples predate the silence: gwrap's own sampling fell behind (it shares a
			// starved CPU quota with the workers, or the machine is loaded), and the newest one
			// does not rule out a heartbeat stale by the line. The next sample, or the worker's
			// death, decides.
			w.timeoutLine = &heldLine{e: e, at: at}
			return
		}
		if !stale && (known || !attributed || !old) {
			s.unverified(e, at, "the worker's heartbeat was not stale")
			return
		}
		s.takeTimeout(w, e, at)
	case gunicorn.KindSignaled:
		inc := s.incidentFor(w, at)
		inc.signal, inc.signalName, inc.oomHint = e.Signal, e.SignalName, e.OOMHint
		s.addLine(w, e)
		fields := []Field{f("pid", w.id.PID), f("signal", e.SignalName)}
		if e.OOMHint {
			fields = append(fields, f("gunicorn_oom_hint", true))
		}
		s.emit(ev(at, Error, "worker.killed", fmt.Sprintf("worker %d died of %s", w.id.PID, e.SignalName), fields...))
	case gunicorn.KindExited:
		inc := s.incidentFor(w, at)
		code := e.ExitCode
		inc.exitCode = &code
		s.addLine(w, e)
		s.emit(ev(at, Warn, "worker.exit", fmt.Sprintf("worker %d exited with code %d", w.id.PID, code),
			f("pid", w.id.PID), f("exit_code", code)))
	}
}

// takeTimeout takes a WORKER TIMEOUT line gwrap believes.
func (s *state) takeTimeout(w *worker, e gunicorn.Event, at time.Time) {
	inc := s.incidentFor(w, at)
	inc.timeout = true
	s.addLine(w, e)
	s.emit(ev(at, Error, "worker.timeout", fmt.Sprintf("Gunicorn timed out worker %d (SIGABRT sent)", w.id.PID),
		f("pid", w.id.PID), f("timeout_s", s.settings.Timeout)))
}

// heldLine is a WORKER TIMEOUT line waiting for a sample taken after it.
type heldLine struct {
	e  gunicorn.Event
	at time.Time
}

// couldBeStale reports whether the newest sample that read the worker's heartbeat leaves room for
// a heartbeat stale by three quarters of the timeout at the line: its age plus the time since it
// was taken reaches that, so only a later sample can say whether the worker beat in between.
func (s *state) couldBeStale(w *worker, at time.Time) bool {
	t := s.limitOf(w)
	samples := w.samples.list()
	for i := len(samples) - 1; i >= 0; i-- {
		if sm := samples[i]; sm.HeartbeatAge >= 0 {
			return t > 0 && sm.HeartbeatAge+at.Sub(sm.Time) >= t*3/4
		}
	}
	return false
}

// settleHeldLine decides a held WORKER TIMEOUT line with a sample taken after it (gone is false)
// or at the worker's end (gone is true). A later sample is exact: its heartbeat age less the time
// since the line is the age the line saw. At the worker's end, with no sample since the line, the
// last sample's age is carried to the line: the worker died right after it, as a timed-out worker
// does.
func (s *state) settleHeldLine(w *worker, sm probes.Sample, gone bool) {
	h := w.timeoutLine
	if h == nil || (!gone && (sm.Time.Before(h.at) || sm.HeartbeatAge < 0)) {
		return
	}
	w.timeoutLine = nil
	t := s.limitOf(w)
	if gone {
		last, ok := w.samples.last()
		if !ok || last.HeartbeatAge < 0 {
			s.unverified(h.e, h.at, "the worker's heartbeat was not stale")
			return
		}
		sm = last
	}
	if t <= 0 || sm.HeartbeatAge-sm.Time.Sub(h.at) < t*3/4 {
		s.unverified(h.e, h.at, "the worker's heartbeat was not stale")
		return
	}
	s.takeTimeout(w, h.e, h.at)
}

// alive reports whether /proc shows the worker alive now: there, with the same start time, not
// exiting, no SIGKILL pending. Without /proc nothing can be checked, nor can a worker known by its
// pid only be told from a process that reused it: both count as not alive.
func (s *state) alive(w *worker) bool {
	if s.cfg.Fate == nil || w.gone() || w.id.StartTime == 0 {
		return false
	}
	return !s.cfg.Fate(w.id).Dying()
}

// unverified ignores a line that looks like one of Gunicorn's kill lines but that /proc does not
// back, and says so once.
func (s *state) unverified(e gunicorn.Event, at time.Time, why string) {
	s.unverifiedText(e.Message, at, why)
}

// unverifiedText is unverified for a line gwrap names itself.
func (s *state) unverifiedText(msg string, at time.Time, why string) {
	s.warnOnce("unverified", at, "unverified_line", fmt.Sprintf(
		"ignored a line that looks like Gunicorn's %q because %s; lines like it are ignored from now on without a word (the app's own output cannot make an incident)",
		truncate(msg, 120), why))
}

// heartbeatStale reports whether the worker's heartbeat, in its samples of the last few seconds,
// was older than three quarters of the timeout (Gunicorn times out past the whole timeout, and a
// late worker is sampled ten times a second). known is false when no heartbeat could be read.
func (s *state) heartbeatStale(w *worker, at time.Time) (stale, known bool) {
	t := s.limitOf(w)
	samples := w.samples.list()
	for i := len(samples) - 1; i >= 0; i-- {
		sm := samples[i]
		if at.Sub(sm.Time) > 5*time.Second {
			break
		}
		if sm.HeartbeatAge < 0 {
			continue
		}
		known = true
		if t > 0 && sm.HeartbeatAge >= t*3/4 {
			return true, true
		}
	}
	return false, known && t > 0
}

// probe takes one of the watcher's events.
func (s *state) probe(e probes.Event) {
	at := e.Time
	if s.dirtyProbe(e) {
		return
	}
	switch e.Kind {
	case probes.EventMaster:
		if e.Parent == 0 {
			s.master, s.found = e.ID.PID, true
			for _, p := range s.startPIDs {
				s.linesSeen = s.linesSeen || p == e.ID.PID
			}
			s.startPIDs = nil
		}
		s.masters[e.ID.PID] = true
	case probes.EventMasterGone:
		delete(s.masters, e.ID.PID)
	case probes.EventBoot:
		w, isNew := s.w.watched(e.ID, at)
		if e.Master != 0 {
			w.master = e.Master
		}
		if lineAt, ok := s.bootSeen[e.ID.PID]; ok {
			delete(s.bootSeen, e.ID.PID)
			if isNew && at.Sub(lineAt) <= bootLineKeep {
				w.bootLine = true
				w.bootedAt = minTime(w.bootedAt, lineAt)
			}
		}
		s.linesSeen = s.linesSeen || w.bootLine
		if isNew {
			w.bootedAt = minTime(w.bootedAt, at)
			s.dirtyBoot(w, e)
			s.emit(ev(at, Info, "worker.boot", s.name(w)+" booted",
				append([]Field{f("pid", e.ID.PID), f("start_ticks", e.ID.StartTime)}, s.roleFields(w)...)...).with(Boot{Role: s.role(w)}))
		}
	case probes.EventSample:
		w, _ := s.w.watched(e.ID, at)
		w.samples.add(e.Sample, s.w.cap)
		s.settleHeldLine(w, e.Sample, false)
		if sm := e.Sample; sm.State != "Z" && sm.State != "X" && !sm.KillPending && !slices.Contains(sm.Missing, "status") {
			w.aliveAt = maxTime(w.aliveAt, at)
		}
		s.beatAfterTimeout(w, e.Sample, at)
		s.recycleWorker(w, e.Sample)
		s.findingChecks(at)
	case probes.EventLate:
		w, _ := s.w.watched(e.ID, at)
		s.keepDeep(w, e.Deep)
		if e.Saturation != nil {
			w.load = append(w.load, *e.Saturation)
		}
		if w.stoppingAt(at) || !s.shutdown.IsZero() || e.Share <= w.lateSeen {
			return // a worker told to stop is draining, not late
		}
		w.lateSeen = e.Share
		s.dirtyLate(w, e)
		s.late(w, e, "worker.late")
	case probes.EventStuckBoot:
		w, _ := s.w.watched(e.ID, at)
		s.keepDeep(w, e.Deep)
		if e.Saturation != nil {
			w.load = append(w.load, *e.Saturation)
		}
		if w.stoppingAt(at) || !s.shutdown.IsZero() || !w.stuckAt.IsZero() {
			return
		}
		w.stuckAt = at
		s.late(w, e, "worker.stuck_boot")
		inc := s.incidentFor(w, at)
		inc.stuck = true
	case probes.EventRecovered:
		w, _ := s.w.watched(e.ID, at)
		w.lateSeen, w.load = 0, nil
		if !w.stuckAt.IsZero() {
			took := at.Sub(w.bootedAt)
			w.stuckAt = time.Time{}
			s.emit(ev(at, Info, "worker.boot", fmt.Sprintf("worker %d finished booting after %.1fs (past the %ds timeout; nothing was killed)", w.id.PID, took.Seconds(), s.settings.Timeout),
				f("pid", w.id.PID), f("start_ticks", w.id.StartTime), f("boot_seconds", round1(took.Seconds()))).with(Boot{Again: true}))
			if inc := w.inc; inc != nil && !inc.timeout && !inc.died() {
				s.dismiss(inc)
			}
			return
		}
		s.emit(ev(at, Info, "worker.recovered", fmt.Sprintf("worker %d heartbeats again", w.id.PID), f("pid", w.id.PID)))
	case probes.EventVanish:
		w, _ := s.w.watched(e.ID, at)
		if w.gone() {
			return
		}
		s.settleHeldLine(w, probes.Sample{}, true)
		w.goneAt = at
		w.endAt = minTime(w.endAt, at)
		s.dirtyGone(w, at)
		s.recycleGone(w)
		s.emit(ev(at, Info, "worker.gone", s.name(w)+" is gone", append([]Field{f("pid", w.id.PID)}, s.roleFields(w)...)...))
		inc := s.incidentFor(w, at)
		// The v1 oom_kill counter moves only once the victim is reaped: give it a moment.
		inc.extend(at, 700*time.Millisecond)
	}
}

// beatAfterTimeout drops a timeout incident whose worker beat after the WORKER TIMEOUT line, or
// in the half timeout before it: Gunicorn times out only a worker silent for longer than the
// timeout and kills it within a second or two, so the line was not the master's, whoever wrote it;
// the worker's real end, later, makes an incident of its own. A beat after the line is given
// beatGrace first: a gevent worker blocked in C beats again as the SIGABRT unwinds it, and
// dies up to its graceful timeout later (dropTimeoutsBeaten).
func (s *state) beatAfterTimeout(w *worker, sm probes.Sample, at time.Time) {
	inc := w.inc
	if inc == nil || !inc.timeout || inc.died() || sm.HeartbeatAge < 0 || !sm.Heartbeats {
		return
	}
	beat := at.Add(-sm.HeartbeatAge)
	if !beat.After(inc.at.Add(-s.timeout() / 2)) {
		return
	}
	lag := time.Duration(0)
	if gunicorn.ClassOf(s.settings).AbortUnwind(0) > 0 {
		lag = lineLag
	}
	if beat.After(inc.at.Add(-lag)) {
		if inc.beatAt.IsZero() {
			inc.beatAt = beat
		}
		return
	}
	s.dropBeaten(inc, at)
}

// lineLag is how much earlier than its line's stamp an event-loop worker's beat is still taken
// for one after the line: a line is stamped when gwrap reads it, and the master writes WORKER
// TIMEOUT, then sends SIGABRT, and an aborted event-loop worker beats at once (seen live 17 ms
// before the stamp). A worker of another class does not beat once aborted: its beat before the
// line makes the line a lie at once.
const lineLag = time.Second

// beatGrace is how long a worker that beat after its WORKER TIMEOUT line may take to die before
// the line is taken for a lie: 2 s, and an event-loop worker's graceful unwind on top
// (gunicorn.Class.AbortUnwind).
func (s *state) beatGrace() time.Duration {
	graceful := time.Duration(s.settings.GracefulTimeout) * time.Second
	return 2*time.Second + gunicorn.ClassOf(s.settings).AbortUnwind(graceful)
}

// dropTimeoutsBeaten drops the timeout incidents whose worker beat after the line and lives on
// past beatGrace.
func (s *state) dropTimeoutsBeaten(now time.Time) {
	grace := s.beatGrace()
	for _, inc := range append([]*incident(nil), s.open...) {
		if inc.timeout && !inc.beatAt.IsZero() && !inc.died() && now.Sub(inc.beatAt) >= grace && s.alive(inc.w) {
			s.dropBeaten(inc, now)
		}
	}
}

func (s *state) dropBeaten(inc *incident, at time.Time) {
	s.unverifiedText(fmt.Sprintf("WORKER TIMEOUT (pid:%d)", inc.w.id.PID), at, "the worker it names beat again after it")
	if inc.stuck {
		inc.timeout, inc.lines, inc.beatAt = false, nil, time.Time{} // still stuck booting: that incident stays open
		return
	}
	s.dismiss(inc)
}

// keepDeep keeps a worker's last deep sample, and the Python stack taken with it.
func (s *state) keepDeep(w *worker, d *probes.Deep) {
	if d == nil {
		return
	}
	w.deep = d
	if d.Stack != nil {
		w.stack = d.Stack
	}
}

// late emits worker.late or worker.stuck_boot.
func (s *state) late(w *worker, e probes.Event, name string) {
	sm := e.Sample
	waiting := []string{}
	if e.Deep != nil {
		if wo := e.Deep.WaitingOn(); wo != nil {
			waiting = wo
		}
	}
	limit := "timeout"
	if isDirty(w) {
		limit = "--dirty-timeout"
	}
	msg := fmt.Sprintf("%s silent for %.1fs of a %ds %s (%.0f%% CPU, state %s)", s.name(w),
		sm.HeartbeatAge.Seconds(), int(e.Timeout.Seconds()), limit, sm.CPUPercent(), sm.State)
	if name == "worker.stuck_boot" {
		msg = fmt.Sprintf("%s has not finished booting after %ds (%s %ds)", s.name(w), int(sm.HeartbeatAge.Seconds()), limit, int(e.Timeout.Seconds()))
	}
	fields := []Field{f("pid", w.id.PID),
		f("heartbeat_age_s", round1(sm.HeartbeatAge.Seconds())), f("timeout_s", e.Timeout.Seconds()),
		f("share", e.Share), f("cpu_percent", round1(sm.CPUPercent())), f("state", sm.State),
		f("waiting_on", waiting), f("rss_bytes", sm.RSS())}
	fields = append(fields, s.roleFields(w)...)
	if dw := s.chain(w, e.Time); dw != nil && dw.PID != 0 {
		msg += fmt.Sprintf(", waiting on dirty worker %d", dw.PID)
		fields = append(fields, f("dirty_pid", dw.PID), f("dirty_action", dw.Action))
	}
	if st := w.stack; st != nil && st.Top != "" {
		fields = append(fields, f("stack_top", st.Top))
		msg += " in " + st.Top
	}
	if s.cfg.Requests != nil && w.dirty == nil {
		if reqs, _ := s.cfg.Requests(w.id, e.Time); len(reqs) > 0 {
			named := make([]string, len(reqs))
			for i, r := range reqs {
				named[i] = r.Running()
			}
			msg += ", serving " + named[0]
			if len(reqs) > 1 {
				msg += fmt.Sprintf(" and %d more", len(reqs)-1)
			}
			fields = append(fields, f("requests", named))
		}
	}
	late := ev(e.Time, Warn, name, msg, fields...)
	if name == "worker.late" {
		late = late.with(Late{Share: e.Share, Role: s.role(w)})
	}
	s.emit(late)
}

// containerSample keeps a cgroup sample.
func (s *state) containerSample(st memwatch.Stats) {
	// Compact only when twice the bound is reached: one copy per containerKeep samples.
	if len(s.cgroup) >= 2*containerKeep {
		s.cgroup = append(s.cgroup[:0], s.cgroup[len(s.cgroup)-containerKeep+1:]...)
	}
	s.cgroup = append(s.cgroup, st)
	s.oomCount.sampled(st)
	s.forecastSample(st)
	s.recycleContainer(st)
}

// signal takes a signal gwrap received.
func (s *state) signal(sig syscall.Signal, forwarded bool, at time.Time) {
	name := unix.SignalName(sig)
	msg := "forwarded " + name + " to gunicorn"
	if !forwarded {
		msg = "received " + name + ", not forwarded"
	}
	s.emit(ev(at, Info, "signal", msg, f("signal", name), f("forwarded", forwarded)))
	// gwrap's own stop (TERM, INT, QUIT) ends everything it runs. Any other signal is Gunicorn's
	// to act on: what it stops, its master says (told). When the master is gwrap's command itself,
	// the signal reached it, and a HUP or TTOU stops what it stops even if its lines do not reach
	// gwrap; through a shell, only the master's line says it arrived.
	switch sig {
	case unix.SIGTERM, unix.SIGINT, unix.SIGQUIT:
		if forwarded && s.shutdown.IsZero() {
			s.shutdown = at
		}
	case unix.SIGHUP, unix.SIGTTOU:
		if forwarded && s.master != 0 && s.master == s.root {
			s.told(s.master, name, at)
		}
	}
}

// childExit takes the end of the supervised command.
func (s *state) childExit(x ExitInfo, at time.Time) {
	level := Info
	if x.Code != 0 {
		level = Error
	}
	msg := fmt.Sprintf("gunicorn exited with code %d", x.Code)
	if x.Reason != "" {
		msg += ": " + x.Reason
	}
	if s.bootFailure != "" {
		msg += " (" + s.bootFailure + ")"
	}
	fields := []Field{f("exit_code", x.Code), f("reason", x.Reason), f("forced", x.Forced)}
	if x.SIGKILL && !x.Forced {
		s.masterOOM = s.unclaimedOOM(at) + x.OOMKills
	}
	if s.masterOOM > 0 {
		msg += fmt.Sprintf(" by the kernel's OOM killer: the container's oom_kill counter moved by %d that no worker's death took; the Gunicorn master itself was OOM-killed, and every worker went with it (raise the memory limit, or lower --workers, --threads or what each worker holds)", s.masterOOM)
		fields = append(fields, f("oom_killed", true), f("oom_kills", s.masterOOM))
	}
	s.emit(ev(at, level, "gunicorn.exit", msg, fields...))
	if s.shutdown.IsZero() {
		s.shutdown = at
	}
}

// tick completes quiet tracebacks, decides the incidents whose window closed, and forgets what
// expired.
func (s *state) tick(now time.Time) {
	s.findingChecks(now)
	for _, a := range s.asm {
		for _, e := range a.FlushIdle() {
			s.gunicorn(e, now)
		}
	}
	if e, ok := s.oomCount.due(now); ok {
		s.oom(oomIn{ev: e}, now) // the sweep saw the move and no event came: its reading stands for it
	}
	s.resolveOOM(now, false)
	s.dropTimeoutsBeaten(now)
	s.decideDue(now, false)
	s.execDue(now, false)
	s.w.expire(now, s.cfg.OnForget)
}

// busy reports whether tick has work: an incident open, a traceback being collected, a gone
// worker's record to forget, an OOM kill whose victims are not named yet. An idle engine needs no timer.
func (s *state) busy() bool {
	if len(s.open) > 0 || len(s.ooms) > 0 || s.oomCount.pending() || s.execPending() {
		return true
	}
	if !s.found && !s.firstLine.IsZero() && !s.warned["master-not-found"] {
		return true // waiting for the watcher to find the master
	}
	for _, a := range s.asm {
		if a.Pending() {
			return true
		}
	}
	for _, w := range s.w.byID {
		if w.gone() || !w.watched {
			return true
		}
	}
	return false
}

// flush decides everything still open: gwrap is stopping.
func (s *state) flush(now time.Time) {
	for _, a := range s.asm {
		for _, e := range a.Flush() {
			s.gunicorn(e, now)
		}
	}
	if e, ok := s.oomCount.due(now.Add(oomEventWait)); ok {
		s.oom(oomIn{ev: e}, now)
	}
	s.resolveOOM(now, true)
	s.decideDue(now, true)
	s.execDue(now, true)
}

func (s *state) addLine(w *worker, e gunicorn.Event) {
	if w.inc != nil {
		w.inc.lines = append(w.inc.lines, e.Line)
	}
}

func round1(x float64) float64 { return float64(int64(x*10+0.5)) / 10 }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// masterGrace is how long after Gunicorn's first line the watcher may take to find its master
// before gwrap says it has not (it looks every 100 ms backing off to a second; a master shows
// itself with its listening sockets at once, with its workers' heartbeat files within a second).
const masterGrace = 5 * time.Second

// noteLine keeps what Gunicorn's lines say about finding it: a start line names its master's pid
// (a hint the watcher must confirm from /proc), the first line starts the wait for the master,
// and a line of Gunicorn's format from a master or worker the watcher found shows its lines
// reach gwrap.
func (s *state) noteLine(e gunicorn.Event, at time.Time) {
	if e.PID <= 0 || e.Kind == gunicorn.KindRaw || e.Kind == gunicorn.KindAccess {
		return
	}
	if e.Kind == gunicorn.KindStarting || e.Kind == gunicorn.KindListening {
		if s.cfg.OnMasterHint != nil {
			s.cfg.OnMasterHint(e.PID)
		}
		if !s.found && len(s.startPIDs) < 8 {
			s.startPIDs = append(s.startPIDs, e.PID)
		}
	}
	if s.firstLine.IsZero() {
		s.firstLine = at
	}
	if !s.linesSeen && (s.found && s.fromMaster(e) || s.w.watchedPID(e.PID)) {
		s.linesSeen = true
	}
}

// findingChecks says once when the watcher has not found the master masterGrace after
// Gunicorn's first line, and once when it found workers but none of Gunicorn's lines reach gwrap
// though the settings say they should (a custom logger, a log level gwrap could not read): from
// then on deaths are judged from /proc and the cgroup alone.
func (s *state) findingChecks(now time.Time) {
	if !s.found && !s.firstLine.IsZero() && now.Sub(s.firstLine) >= masterGrace {
		s.warnOnce("master-not-found", now, "master_not_found", fmt.Sprintf(
			"gwrap has not found the Gunicorn master %.0fs after Gunicorn's first line, so no worker is sampled and a post-mortem can quote only Gunicorn's lines (no heartbeat, memory or CPU): "+
				"gwrap looks below its command for the process that holds the heartbeat files its workers hold, or a listening socket and Gunicorn's start line with its pid; "+
				"its open files may be closed to gwrap (another user, and no CAP_SYS_PTRACE), or Gunicorn runs outside gwrap's process tree",
			now.Sub(s.firstLine).Seconds()))
	}
	if s.found && !s.linesSeen && !s.warned["lines-not-seen"] && s.linesExpected() {
		for _, w := range s.w.byID {
			if w.watched && !w.gone() && now.Sub(w.bootedAt) >= masterGrace {
				s.warnOnce("lines-not-seen", now, "lines_not_seen",
					"none of Gunicorn's log lines reach gwrap (a custom logger or logging configuration, or a log level it could not read): worker deaths are judged from /proc and the cgroup alone — "+
						"a worker gone with its heartbeat stale past the timeout is reported as a timeout, one gone with a fresh heartbeat and no OOM kill is no incident")
				return
			}
		}
	}
}

// linesExpected reports whether the settings say Gunicorn's INFO lines come to gwrap: when they
// say otherwise (a file error log, a logger class, a level above info), the start-up lint said so.
func (s *state) linesExpected() bool {
	switch strings.ToLower(s.settings.LogLevel) {
	case "", "info", "debug":
	default:
		return false
	}
	return len(gunicorn.BlindSpots(s.settings)) == 0
}
