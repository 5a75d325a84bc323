package engine

import (
	"fmt"
	"strings"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// Gunicorn 25+'s dirty workers: the dirty arbiter (a child of the master) and its dirty workers
// (the master's grandchildren), watched like the HTTP workers. Their records live in the same
// table, marked by worker.dirty; their lines are believed when they come from the arbiter and
// name a dirty worker gwrap knows (from the arbiter's own "Spawned dirty worker" line or the
// watcher), as the master's are about its HTTP workers. An action that runs past --dirty-timeout
// (Gunicorn logs "Execution timeout for APP.ACTION" and answers the caller, but cannot stop the
// action's thread) is an incident of its own kind that ends no worker: it has its own record
// (execTimeout), is reported when its window closes, and is followed through the worker's Python
// stack until the action ends.

// dirtyInfo marks a record as a dirty worker's or the dirty arbiter's.
type dirtyInfo struct {
	role     string   // postmortem.RoleDirty or postmortem.RoleDirtyArbiter
	apps     []string // a dirty worker's apps, from its spawn line (nil: unknown)
	arbiter  int      // the arbiter that spawned it
	reaped   bool     // the arbiter logged "Dirty worker exited" about it
	bootFail bool     // the arbiter logged "Dirty worker failed to boot" about it
	folded   bool     // that boot failure was folded into the first of a boot loop

	lastEnd  time.Time // when the last action Gunicorn gave up on ended (a call queued behind it ran from then)
	lastCall string    // that action
}

// dirtyWaited is what the dirty workers were doing when an HTTP worker, late, waited on the
// dirty arbiter's socket.
type dirtyWaited struct {
	at     time.Time
	socket string
	calls  []probes.DirtyCall
}

// dirtyState is the engine's view of the dirty pool.
type dirtyState struct {
	on        bool     // the master runs a dirty arbiter (settings or its line); the watcher was told
	arbiter   int      // the dirty arbiter's pid (0: none known)
	sockets   []string // its listening sockets: what an HTTP worker waiting on it waits on
	spawned   map[int]dirtySpawn
	spawnFIFO []int // spawned's pids, oldest first (bounded: a boot loop spawns a hundred a second)
	execs     []*execTimeout
	loop      bootLoop
}

// dirtySpawn is a dirty worker as its arbiter's spawn line announced it.
type dirtySpawn struct {
	arbiter int
	apps    []string
}

// bootLoop is a run of dirty workers failing to boot: the arbiter respawns a failed one at once,
// a hundred times a second, so only the first is an incident; the others are counted into it.
type bootLoop struct {
	inc   *incident
	last  time.Time
	count int
}

// maxSpawned bounds the spawn lines remembered for workers gwrap has no record of yet.
const maxSpawned = 256

// loopQuiet ends a boot loop: this long without a dirty boot failure, the next one is news.
const loopQuiet = 10 * time.Minute

func newDirtyState(s gunicorn.Settings) dirtyState {
	return dirtyState{on: s.DirtyWorkers > 0 && len(s.DirtyApps) > 0, spawned: map[int]dirtySpawn{}}
}

func isDirty(w *worker) bool {
	return w != nil && w.dirty != nil && w.dirty.role == postmortem.RoleDirty
}
func isArbiterRec(w *worker) bool {
	return w != nil && w.dirty != nil && w.dirty.role == postmortem.RoleDirtyArbiter
}

// name names a record in an event's message: "worker 812", "dirty worker 812", "dirty arbiter 811".
func (s *state) name(w *worker) string {
	switch {
	case isDirty(w):
		return fmt.Sprintf("dirty worker %d", w.id.PID)
	case isArbiterRec(w):
		return fmt.Sprintf("dirty arbiter %d", w.id.PID)
	}
	return fmt.Sprintf("worker %d", w.id.PID)
}

// role is a worker's role (postmortem.Role*), "" for an HTTP worker.
func (s *state) role(w *worker) string {
	switch {
	case isDirty(w):
		return postmortem.RoleDirty
	case isArbiterRec(w):
		return postmortem.RoleDirtyArbiter
	}
	return ""
}

// roleFields are the fields that mark an event about a dirty worker (role, apps) or the arbiter;
// none for an HTTP worker, so its events read as they always did.
func (s *state) roleFields(w *worker) []Field {
	switch {
	case isDirty(w):
		apps := w.dirty.apps
		if apps == nil {
			apps = []string{}
		}
		return []Field{f("role", postmortem.RoleDirty), f("apps", apps)}
	case isArbiterRec(w):
		return []Field{f("role", postmortem.RoleDirtyArbiter)}
	}
	return nil
}

// reportFields are the postmortem event's fields for a dirty incident.
func (s *state) reportFields(r *postmortem.Report) []Field {
	inc := r.Incident
	var out []Field
	if inc.Role != "" {
		out = append(out, f("role", inc.Role))
	}
	if inc.Role == postmortem.RoleDirty {
		apps := inc.DirtyApps
		if apps == nil {
			apps = []string{}
		}
		out = append(out, f("apps", apps))
	}
	if inc.Action != "" {
		out = append(out, f("action", inc.Action))
	}
	if inc.ActionRunning != nil {
		out = append(out, f("action_running", *inc.ActionRunning))
	}
	if dw := inc.WaitingOnDirty; dw != nil && dw.PID != 0 {
		out = append(out, f("dirty_pid", dw.PID), f("dirty_action", dw.Action), f("dirty_cause", string(dw.Cause)))
	}
	return out
}

// dirtyTimeout is --dirty-timeout.
func (s *state) dirtyTimeout() time.Duration {
	return time.Duration(s.settings.DirtyTimeout) * time.Second
}

// turnOn notes that the master runs a dirty arbiter, and tells the watcher when the settings had
// not said so.
func (s *state) turnOn() {
	if s.dirty.on {
		return
	}
	s.dirty.on = true
	s.tell()
}

// arbiterRecord returns the record of the arbiter pid (making it, or turning a record the
// watcher took for an HTTP worker before it knew about dirty workers into the arbiter's).
func (s *state) arbiterRecord(id probes.ID, at time.Time) *worker {
	var w *worker
	if id.StartTime != 0 {
		w, _ = s.w.watched(id, at)
	} else if w = s.w.known(id.PID); w == nil || w.gone() {
		w = s.w.logged(probes.ID{PID: id.PID}, at)
	}
	if !isArbiterRec(w) {
		w.dirty = &dirtyInfo{role: postmortem.RoleDirtyArbiter}
		w.lateSeen, w.load, w.stack, w.deep = 0, nil, nil, nil
		if w.inc != nil && !w.inc.died() {
			s.dismiss(w.inc) // its "silence" was a worker's heartbeat it does not own
		}
	}
	s.dirty.arbiter = id.PID
	return w
}

// dirtyWorker returns the record of a dirty worker of the current arbiter: known, or made from
// the arbiter's spawn line when create is set.
func (s *state) dirtyWorker(pid int, at time.Time, create bool) *worker {
	if w := s.w.known(pid); w != nil {
		if isDirty(w) {
			return w
		}
		if !w.gone() {
			return nil // a live record of another kind: an HTTP worker
		}
	}
	sp, ok := s.dirty.spawned[pid]
	if !ok || !create || sp.arbiter != s.dirty.arbiter {
		return nil
	}
	w := s.w.logged(probes.ID{PID: pid}, at)
	w.dirty = &dirtyInfo{role: postmortem.RoleDirty, apps: sp.apps, arbiter: sp.arbiter}
	return w
}

// rememberSpawn keeps a spawn line's apps for the record of that worker, bounded.
func (s *state) rememberSpawn(pid, arbiter int, apps []string) {
	if _, ok := s.dirty.spawned[pid]; !ok {
		s.dirty.spawnFIFO = append(s.dirty.spawnFIFO, pid)
	}
	s.dirty.spawned[pid] = dirtySpawn{arbiter: arbiter, apps: apps}
	for len(s.dirty.spawnFIFO) > maxSpawned {
		delete(s.dirty.spawned, s.dirty.spawnFIFO[0])
		s.dirty.spawnFIFO = s.dirty.spawnFIFO[1:]
	}
}

// dirtyLine takes one of the dirty arbiter's or dirty workers' lines.
func (s *state) dirtyLine(e gunicorn.Event, at time.Time) {
	switch e.Kind {
	case gunicorn.KindDirtyArbiterSpawned:
		if !s.fromMaster(e) {
			s.unverified(e, at, "it does not come from the Gunicorn master")
			return
		}
		// The arbiter's lines are attributed from now on; its record is marked when the watcher
		// finds it (or when it dies): /proc, not a line, says which process is what.
		s.turnOn()
		s.dirty.arbiter = e.WorkerPID
		if e.Socket != "" {
			s.dirty.sockets = appendNew(s.dirty.sockets, e.Socket)
		}
		s.emit(ev(at, Info, "dirty_arbiter.start", fmt.Sprintf("Gunicorn started its dirty arbiter %d", e.WorkerPID),
			f("pid", e.WorkerPID), f("dirty_timeout_s", s.settings.DirtyTimeout)).with(DirtyTimeout{Timeout: time.Duration(s.settings.DirtyTimeout) * time.Second}))
	case gunicorn.KindDirtySpawned:
		if e.PID == 0 || e.PID != s.dirty.arbiter {
			return
		}
		s.rememberSpawn(e.WorkerPID, e.PID, e.Apps) // bounded: a boot loop spawns a hundred a second
		if w := s.w.known(e.WorkerPID); isDirty(w) {
			w.dirty.apps = e.Apps
		}
	case gunicorn.KindDirtyWorkerError:
		// The worker's own traceback, before the arbiter's "failed to boot" line about it.
		if s.folding(at) {
			return
		}
		if w := s.dirtyWorker(e.PID, at, true); w != nil && !w.reported {
			inc := s.incidentFor(w, at)
			inc.lines = append(inc.lines, e.Line)
			inc.traceback, inc.bootError = e.Traceback, true
		}
	case gunicorn.KindDirtyTimeout, gunicorn.KindDirtySignaled, gunicorn.KindDirtyBootFailed, gunicorn.KindDirtyExited:
		s.dirtyKill(e, at)
	case gunicorn.KindDirtyExecTimeout:
		s.execLine(e, at)
	case gunicorn.KindDirtyArbiterExited:
		s.arbiterExit(e, at)
	}
}

// folding reports whether dirty workers are failing to boot in a loop: the next failure is
// counted into the first one's incident.
func (s *state) folding(at time.Time) bool {
	return s.dirty.loop.inc != nil && at.Sub(s.dirty.loop.last) < loopQuiet
}

// dirtyKill takes the arbiter's word on one of its workers: a DIRTY WORKER TIMEOUT (believed
// when the worker's heartbeat really was stale against --dirty-timeout), a death by signal, a
// failed boot, a reap.
func (s *state) dirtyKill(e gunicorn.Event, at time.Time) {
	if s.dirty.arbiter == 0 || e.PID != s.dirty.arbiter {
		if e.Kind != gunicorn.KindDirtyExited {
			s.unverified(e, at, "it does not come from the dirty arbiter")
		}
		return
	}
	if e.Kind == gunicorn.KindDirtyBootFailed && s.folding(at) {
		s.dirty.loop.count++
		s.dirty.loop.last = at
		if w := s.w.known(e.WorkerPID); isDirty(w) && w.inc != s.dirty.loop.inc {
			w.dirty.folded = true
		}
		return
	}
	w := s.dirtyWorker(e.WorkerPID, at, e.Kind != gunicorn.KindDirtyExited)
	if w == nil {
		if e.Kind != gunicorn.KindDirtyExited {
			s.unverified(e, at, "it names no dirty worker gwrap knows")
		}
		return
	}
	fields := append([]Field{f("pid", w.id.PID)}, s.roleFields(w)...)
	switch e.Kind {
	case gunicorn.KindDirtyTimeout:
		// Believed when the heartbeat was stale against --dirty-timeout; when gwrap could not
		// read --dirty-timeout (a config file it could not evaluate), on the arbiter's word.
		stale, known := s.heartbeatStale(w, at)
		old := s.dirtyTimeout() > 0 && at.Sub(w.bootedAt) >= s.dirtyTimeout()-time.Second
		unknown := s.settings.Sources["dirty_timeout"] == gunicorn.SourceUnknown
		if !stale && !unknown && (known || !old) {
			s.unverified(e, at, "the dirty worker's heartbeat was not stale")
			return
		}
		inc := s.incidentFor(w, at)
		inc.timeout = true
		s.addLine(w, e)
		s.emit(ev(at, Error, "worker.timeout", fmt.Sprintf("the dirty arbiter timed out dirty worker %d (SIGABRT sent)", w.id.PID),
			append(fields, f("timeout_s", s.settings.DirtyTimeout))...))
	case gunicorn.KindDirtySignaled:
		inc := s.incidentFor(w, at)
		inc.signal, inc.signalName = e.Signal, e.SignalName
		s.addLine(w, e)
		s.emit(ev(at, Error, "worker.killed", fmt.Sprintf("dirty worker %d died of %s", w.id.PID, e.SignalName),
			append(fields, f("signal", e.SignalName))...))
	case gunicorn.KindDirtyBootFailed:
		inc := s.incidentFor(w, at)
		code := 3 // the arbiter logs this line for exit code 3 (WORKER_BOOT_ERROR) only
		inc.exitCode, inc.bootError = &code, true
		w.dirty.bootFail = true
		s.addLine(w, e)
		s.dirty.loop = bootLoop{inc: inc, last: at}
		s.emit(ev(at, Warn, "worker.exit", fmt.Sprintf("dirty worker %d failed to boot (exit code 3)", w.id.PID),
			append(fields, f("exit_code", code))...))
	case gunicorn.KindDirtyExited:
		w.dirty.reaped = true
		s.addLine(w, e)
	}
}

// arbiterExit takes the master's word on its dirty arbiter's end.
func (s *state) arbiterExit(e gunicorn.Event, at time.Time) {
	w := s.w.known(e.WorkerPID)
	if !s.fromMaster(e) || !isArbiterRec(w) && (e.WorkerPID != s.dirty.arbiter || w == nil) {
		s.unverified(e, at, "it does not come from the Gunicorn master about its dirty arbiter")
		return
	}
	if !isArbiterRec(w) {
		w = s.arbiterRecord(w.id, at)
	}
	inc := s.incidentFor(w, at)
	fields := []Field{f("pid", w.id.PID)}
	msg := fmt.Sprintf("dirty arbiter %d exited", w.id.PID)
	switch {
	case e.Signal != 0:
		inc.signal, inc.signalName = e.Signal, e.SignalName
		msg = fmt.Sprintf("dirty arbiter %d died of %s", w.id.PID, e.SignalName)
		fields = append(fields, f("signal", e.SignalName))
	default:
		code := e.ExitCode
		inc.exitCode = &code
		msg = fmt.Sprintf("dirty arbiter %d exited with code %d", w.id.PID, code)
		fields = append(fields, f("exit_code", code))
	}
	s.addLine(w, e)
	level := Warn
	if e.Signal == 0 && e.ExitCode == 0 {
		level = Info
	}
	s.emit(ev(at, level, "dirty_arbiter.exit", msg, fields...))
	if s.dirty.arbiter == w.id.PID {
		s.dirty.arbiter = 0
	}
}

// dirtyProbe takes the watcher's dirty events; false for the others (which probe takes).
func (s *state) dirtyProbe(e probes.Event) bool {
	switch e.Kind {
	case probes.EventArbiter:
		s.turnOn()
		w := s.arbiterRecord(e.ID, e.Time)
		w.bootedAt = minTime(w.bootedAt, e.Time)
		for _, sock := range e.DirtySockets {
			s.dirty.sockets = appendNew(s.dirty.sockets, sock)
		}
		return true
	case probes.EventArbiterGone:
		w, _ := s.w.watched(e.ID, e.Time)
		if !isArbiterRec(w) || w.gone() {
			return true
		}
		w.goneAt = e.Time
		inc := s.incidentFor(w, e.Time)
		inc.extend(e.Time, 700*time.Millisecond) // the v1 oom_kill counter lags the reaping
		if s.dirty.arbiter == w.id.PID {
			s.dirty.arbiter = 0
		}
		return true
	case probes.EventStack:
		s.execStack(e)
		return true
	case probes.EventSample:
		if e.Role == probes.RoleDirty && e.Sample.Heartbeats && s.dirty.loop.inc != nil && s.dirty.loop.inc.w.id != e.ID {
			s.dirty.loop = bootLoop{} // a dirty worker booted: a boot loop, if any, is over
		}
	}
	return false
}

// dirtyBoot marks a worker the watcher found under the arbiter.
func (s *state) dirtyBoot(w *worker, e probes.Event) {
	if e.Role != probes.RoleDirty || isDirty(w) {
		return
	}
	d := &dirtyInfo{role: postmortem.RoleDirty, arbiter: s.dirty.arbiter}
	if sp, ok := s.dirty.spawned[w.id.PID]; ok {
		d.apps, d.arbiter = sp.apps, sp.arbiter
	}
	w.dirty = d
}

// dirtyLate keeps, for an HTTP worker late while it waited on the arbiter's socket, what the
// dirty workers were doing.
func (s *state) dirtyLate(w *worker, e probes.Event) {
	if e.Dirty == nil || w.dirty != nil {
		return
	}
	sock := ""
	if e.Deep != nil {
		for _, wo := range e.Deep.WaitingOn() {
			if p, ok := strings.CutPrefix(wo, "unix "); ok && contains(s.dirty.sockets, p) {
				sock = p
			}
		}
	}
	w.waited = &dirtyWaited{at: e.Time, socket: sock, calls: e.Dirty}
}

// dirtyGone ends the followed actions of a dirty worker that is gone.
func (s *state) dirtyGone(w *worker, at time.Time) {
	for _, ex := range s.dirty.execs {
		if ex.w == w && ex.ended.IsZero() {
			s.execEnded(ex, at, true)
		}
	}
}

// chain names the dirty worker an HTTP worker waited on and what it was doing; nil when it did
// not wait on the dirty arbiter.
func (s *state) chain(w *worker, at time.Time) *postmortem.DirtyWait {
	wt := w.waited
	if wt == nil {
		return nil
	}
	dw := &postmortem.DirtyWait{Socket: wt.socket}
	// How long it had waited: its silence at its last live sample.
	for _, sm := range w.samples.list() {
		if sm.Time.Before(at) && sm.HeartbeatAge >= 0 {
			dw.Seconds = round1(sm.HeartbeatAge.Seconds())
		}
	}
	var running []probes.DirtyCall
	stacks := 0
	for _, c := range wt.calls {
		if c.Stack == nil || len(c.Stack.Frames) == 0 {
			continue
		}
		stacks++
		if c.Stack.DirtyRunning {
			running = append(running, c)
		}
	}
	switch {
	case len(wt.calls) == 0:
		dw.Why = "gwrap saw no dirty worker to serve the call"
	case stacks == 0:
		dw.Why = "gwrap has no Python stack of the dirty workers to tell which one served the call"
	case len(running) == 0:
		dw.Why = "no dirty worker was running an action: the call was queued in the arbiter"
	case len(running) > 1:
		for _, c := range running {
			dw.Candidates = append(dw.Candidates, c.ID.PID)
		}
	default:
		c := running[0]
		dw.PID, dw.StackTop = c.ID.PID, c.Stack.Top
		d := s.w.byID[c.ID]
		dw.Action = c.Stack.DirtyAction
		if isDirty(d) && len(d.dirty.apps) == 1 && dw.Action != "" {
			dw.Action = d.dirty.apps[0] + "." + dw.Action
		}
		if d != nil {
			s.dirtyDoing(dw, d, wt.at, at)
		}
	}
	return dw
}

// dirtyDoing measures what the dirty worker serving a call did while the HTTP worker waited: its
// CPU over the wait, up to the HTTP worker's end (cpu_bound at the classifier's threshold, else
// blocked) and, computing, for how long it had been.
func (s *state) dirtyDoing(dw *postmortem.DirtyWait, d *worker, late, at time.Time) {
	from := at.Add(-time.Duration(dw.Seconds * float64(time.Second)))
	var sum float64
	n := 0
	var busySince time.Time
	for _, sm := range d.samples.list() {
		if sm.Time.Before(from) || sm.Time.After(at) || sm.NoRates {
			continue
		}
		sum += sm.CPUPercent()
		n++
		if sm.CPUPercent() >= s.cfg.Thresholds.CPUBound {
			if busySince.IsZero() {
				busySince = sm.Time.Add(-time.Second)
			}
		} else {
			busySince = time.Time{}
		}
	}
	if n == 0 {
		return
	}
	cpu := round1(sum / float64(n))
	dw.CPUPercent = &cpu
	dw.Cause = postmortem.CauseBlocked
	if cpu >= s.cfg.Thresholds.CPUBound {
		dw.Cause = postmortem.CauseCPUBound
		if !busySince.IsZero() {
			dw.Seconds = min(dw.Seconds, round1(at.Sub(busySince).Seconds()))
		}
	}
}

// dirtyFacts completes the facts of a dirty worker's or the arbiter's incident.
func (s *state) dirtyFacts(inc *incident, fs facts) facts {
	w := inc.w
	switch {
	case isArbiterRec(w):
		fs.Arbiter = true
	case isDirty(w):
		fs.Folded = w.dirty.folded
		fs.BootFailure = inc.bootError && w.dirty.bootFail
		// Its arbiter logs every reap ("Dirty worker exited") and a death by signal: a dirty
		// worker gone with no signal line exited by itself (the code is not logged).
		fs.Exiting = fs.Exiting || w.dirty.reaped && inc.signal == 0
		fs.ExitsVisible = false
	}
	return fs
}

// dirtyIncident completes a report's incident with the dirty facts: the role and apps, a dirty
// boot loop's repeats, the arbiter's orphans, the dirty worker an HTTP worker waited on.
func (s *state) dirtyIncident(inc *incident, pi *postmortem.Incident) {
	w := inc.w
	switch {
	case isDirty(w):
		pi.Role, pi.DirtyApps = postmortem.RoleDirty, w.dirty.apps
		pi.HandledAbort = inc.timeout && w.dirty.reaped && inc.signal == 0
		if s.dirty.loop.inc == inc {
			pi.Repeats = s.dirty.loop.count
		}
	case isArbiterRec(w):
		pi.Role = postmortem.RoleDirtyArbiter
		for _, o := range s.w.live() {
			if isDirty(o) && o.dirty.arbiter == w.id.PID {
				pi.Orphans = append(pi.Orphans, o.id.PID)
			}
		}
	default:
		pi.WaitingOnDirty = s.chain(w, inc.at)
	}
}

func appendNew(list []string, v string) []string {
	if contains(list, v) {
		return list
	}
	return append(list, v)
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
