// Package engine is gwrap's middle: everything between the producers (the relay's lines, the worker
// watcher's samples and events, the cgroup sampler, the OOM watcher, the supervisor's signals and
// exit) and the outputs: the contract's events (Emitter; what is counted or reported besides
// stdout rides on each event as a typed Fact, taken by a Port: emit.go), the post-mortem reports
// (Reporter), and the flight record, its Journal of every input it takes (journal.go).
//
// One goroutine owns all of it. Each worker has one record, keyed by (pid, start time), holding
// its samples, its late spells and its incident, and forgotten at one expiry. An incident is
// opened by the first sign of a death (a line, a vanish, an OOM kill, a stuck boot), stays
// tentative while the follow-up window is open, and is then confirmed (and reported) or dismissed
// by decide, a pure function of all the evidence gathered — never of the order it arrived in.
// Lines that look like Gunicorn's are believed only when /proc agrees: a kill line must come from
// the master and name a worker gwrap knows that /proc shows gone, a WORKER TIMEOUT must find that
// worker's heartbeat stale and the worker must then die, not beat again; a boot line makes a
// record only for a child of the master. An OOM kill goes to the worker whose own evidence fits
// it (oom.go).
//
// Shutdown is ordered by the caller: producers stop first, then Run's context is cancelled; Run
// takes what they left queued, decides every open incident and returns.
package engine

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/internal/guard"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
	"github.com/gwrap/gwrap/recycle"
)

// Reporter stores a post-mortem and returns where it goes. gwrap's writes it later, on a
// goroutine of its own (a slow disk must not hold up the engine), and returns at once.
type Reporter interface {
	Write(postmortem.Report) (string, error)
}

// Config is what the engine is told at start.
type Config struct {
	Settings   gunicorn.Settings // as read at start-up; the log's own lines refine them
	Thresholds postmortem.Thresholds
	Host       postmortem.Host
	Platform   string // gunicorn.Platform: "app_service", "kubernetes", "cloud_run", "ecs" or "" (for the advice)

	Reports Reporter
	// Fate reads what /proc shows of one process's end (probes.FS.Fate): whether a worker a
	// kill line names is really gone, whether a pid a boot line names is a child of the master.
	// Nil: nothing can be checked, so no line makes a record and every kill line is taken as
	// the master's word.
	Fate func(probes.ID) probes.Fate
	// Fates reads the fate of each child of the master (probes.FS.Fates). The OOM watcher's
	// goroutine calls it, through OOM, the moment the oom_kill counter moved: the victim is then
	// still there, dying of SIGKILL, not yet reaped by the master.
	Fates func(master int) ([]probes.Fate, error)
	// CrashStack returns the Python stack a worker that died of a signal left behind, if any.
	CrashStack func(pid int) *probes.PyStack
	// Requests returns the requests worker id was serving at `at` (its death, or a late
	// event), oldest first, from its request file, and why there are none to tell when that is
	// not known ("": read). Nil: requests are not recorded.
	Requests func(id probes.ID, at time.Time) ([]postmortem.Request, string)
	// OnForget is told the pid of each worker whose record is forgotten (its stack dump can go).
	OnForget func(pid int)
	// OnLimits is told what the watcher judges the workers against (the timeouts, the worker
	// class's heartbeat, whether the master runs a dirty arbiter), from the settings the engine
	// holds: once by New, then whenever they change (the master's own settings read late, the
	// class its log names, its dirty arbiter seen). It must not block.
	OnLimits func(probes.Limits)
	// OnSettings is told the settings the engine holds, as the outputs label what they count
	// (/metrics' gwrap_gunicorn_info): those read at start or from the master, with the class
	// Gunicorn's log names. Told with OnLimits, by the same path; it must not block.
	OnSettings func(gunicorn.Settings)
	// OnMasterHint is told the pid a start line of Gunicorn's names as its master's ("Starting
	// gunicorn", "Listening at: … (PID)"): a hint for the watcher, which /proc must confirm
	// (probes.Watcher.Hint). Called on the engine's goroutine; it must not block.
	OnMasterHint func(pid int)
	// Follow asks the watcher to take a dirty worker's stack every sweep, or to stop: the engine
	// follows an action Gunicorn gave up on (execution timeout) to say when it ends.
	Follow func(pid int, on bool)

	// Recycle is the recycling policy (--recycle-at, --recycle-worker-memory); the zero Policy
	// is off. Terminate sends SIGTERM to the worker id, a child of master, only after checking it
	// is still that process; the engine calls it on its goroutine when the recycler picks a worker.
	Recycle   recycle.Policy
	Terminate func(id probes.ID, master int) error

	// Journal is the flight record, fed from the engine's inputs (nil: none).
	Journal Journal

	// OnPanic is told when the engine panicked: it is off from then on (no events, no
	// post-mortems: its state cannot be trusted), and only relays Gunicorn's lines.
	OnPanic func(guard.Panic)

	History  time.Duration // per-worker history kept (5 min)
	Interval time.Duration // the watcher's sweep period (1 s): sizes the history and the tick
	Now      func() time.Time
}

// Engine is gwrap's event loop. Producers call Line, Probe, Sweep, OOM, Signal and ChildExit
// from their own goroutines; Run owns everything else.
type Engine struct {
	cfg Config
	st  *state

	// in carries every producer's input in the order it was handed over (one channel, so that
	// the watcher's "this worker exists" is taken before a line that came after it).
	in      chan input
	lines   budget // the bytes of the lines in `in`
	done    chan struct{}
	off     bool // it panicked: lines are relayed, nothing else is done (Run's goroutine only)
	relayed bool // the line being taken reached the emitter (Run's goroutine only)

	// fatesOf are the processes whose children OOM reads.
	fatesOf parents
}

// marked is the engine's emitter: it notes that the line being taken was relayed, so that a
// line whose handling panicked before it was relayed is still relayed.
type marked struct {
	Emitter
	e *Engine
}

func (m marked) Relay(stream string, line []byte, parsed gunicorn.Event, at time.Time) {
	m.Emitter.Relay(stream, line, parsed, at)
	m.e.relayed = true
	if j := m.e.cfg.Journal; j != nil {
		m.e.journalGuarded(func() { j.Gunicorn(parsed) })
	}
}

// input is one producer's input: exactly one field is set.
type input struct {
	line     *lineIn
	probe    *probes.Event
	sweep    *sweepIn
	oom      *oomIn
	signal   *signalIn
	exit     *ExitInfo
	root     int
	settings *gunicorn.Settings
}

// ExitInfo is how the supervised command ended.
type ExitInfo struct {
	Code   int
	Reason string
	Forced bool // the stop budget ran out
	// SIGKILL: the command died of SIGKILL that gwrap did not send.
	SIGKILL bool
	// OOMKills is how far the cgroup's oom_kill counter moved past the moves the engine was told
	// of, read once the command was reaped (on cgroup v1 the counter moves at the reaping, often
	// before the notification comes).
	OOMKills uint64
}

type lineIn struct {
	stream string
	line   []byte
	at     time.Time
}

type signalIn struct {
	sig       syscall.Signal
	forwarded bool
	at        time.Time
}

// inBuffer and inBytes bound what producers may queue: the relay waits when either is reached
// (Gunicorn's pipe fills, as it would with a slow reader), so no line is lost. A line may be
// megabytes (the relay hands lines whole up to 4 MiB), so a bound in items alone is not one in
// memory: inBuffer of those would be 16 GiB.
const (
	inBuffer = 4096
	inBytes  = 4 << 20
)

// New makes an engine; nothing runs until Run.
func New(cfg Config, out Emitter) *Engine {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.History <= 0 {
		cfg.History = 5 * time.Minute
	}
	if cfg.Thresholds.FollowUpWindow <= 0 {
		cfg.Thresholds.FollowUpWindow = postmortem.DefaultThresholds().FollowUpWindow
	}
	e := &Engine{cfg: cfg, in: make(chan input, inBuffer), done: make(chan struct{})}
	e.st = newState(cfg, marked{out, e})
	e.lines.init(inBytes)
	e.st.tell()
	return e
}

func (e *Engine) send(in input) {
	select {
	case e.in <- in:
	case <-e.done:
	}
}

// Line hands the engine one line of the child's output (copied: the caller may reuse it). It
// waits while the lines queued hold inBytes (or inBuffer inputs are queued).
func (e *Engine) Line(stream string, line []byte) {
	if !e.lines.take(len(line)) {
		return // the engine has stopped
	}
	e.send(input{line: &lineIn{stream: stream, line: append([]byte(nil), line...), at: e.cfg.Now()}})
}

// Probe hands the engine one of the worker watcher's events.
func (e *Engine) Probe(ev probes.Event) {
	e.sawMaster(ev)
	e.send(input{probe: &ev})
}

// Sweep hands the engine a sweep of the watcher in one input: the cgroup's sample (nil: none),
// taken first, and the workers' events, in order (one wake-up of the engine a sweep).
func (e *Engine) Sweep(st *memwatch.Stats, evs []probes.Event) {
	for _, ev := range evs {
		e.sawMaster(ev)
	}
	if st != nil || len(evs) > 0 {
		e.send(input{sweep: &sweepIn{stats: st, probes: evs}})
	}
}

type sweepIn struct {
	stats  *memwatch.Stats
	probes []probes.Event
}

func (e *Engine) sawMaster(ev probes.Event) { e.fatesOf.saw(ev) }

// OOM hands the engine an OOM-kill event of the container's cgroup. It reads the fate of the
// master's children first, on the caller's goroutine: call it as soon as the counter moved,
// before anything that may wait, so that the victim is still there to be seen dying.
func (e *Engine) OOM(ev memwatch.OOMEvent) {
	in := &oomIn{ev: ev}
	if e.cfg.Fates != nil {
		for _, pid := range e.fatesOf.list() {
			if fates, err := e.cfg.Fates(pid); err == nil {
				in.fates, in.seen = append(in.fates, fates...), true
			}
		}
		if in.seen {
			in.seenAt = e.cfg.Now()
		}
	}
	e.send(input{oom: in})
}

// Signal tells the engine a signal was received (and forwarded to Gunicorn or not).
func (e *Engine) Signal(sig syscall.Signal, forwarded bool) {
	e.send(input{signal: &signalIn{sig: sig, forwarded: forwarded, at: e.cfg.Now()}})
}

// ChildExit tells the engine how the supervised command ended (after its output was drained).
func (e *Engine) ChildExit(x ExitInfo) { e.send(input{exit: &x}) }

// Started tells the engine the supervised command's pid: when Gunicorn is the command (or exec'd
// by it), its master's lines come from that pid before the watcher's first sweep finds it.
func (e *Engine) Started(pid int) {
	e.fatesOf.started(pid)
	e.send(input{root: pid})
}

// Settings gives the engine Gunicorn's settings read again once its master was found (the
// command was a shell or a script that ran Gunicorn).
func (e *Engine) Settings(s gunicorn.Settings) { e.send(input{settings: &s}) }

// Reported is the number of post-mortems made; read it after Run returns.
func (e *Engine) Reported() int { return e.st.reported }

// MasterOOMKilled reports whether the command itself was OOM-killed, as its exit showed; read it
// once Run has returned.
func (e *Engine) MasterOOMKilled() bool { return e.st.masterOOM > 0 }

// Run owns the engine's state until ctx is done; then it takes what is still queued, decides every
// open incident and returns. Cancel ctx only after the producers have stopped.
func (e *Engine) Run(ctx context.Context) {
	defer close(e.done)
	defer e.lines.close()
	// The tick runs only while the state has work for it (st.busy): an idle gwrap wakes for its
	// samplers, not for the engine.
	tick := time.NewTicker(e.cfg.Interval)
	defer tick.Stop()
	ticking := true
	for {
		busy := false
		e.guarded(func() { busy = e.st.busy() })
		if busy != ticking {
			if busy {
				tick.Reset(e.cfg.Interval)
			} else {
				tick.Stop()
			}
			ticking = busy
		}
		select {
		case in := <-e.in:
			e.takeGuarded(in)
		case <-tick.C:
			e.guarded(func() { e.st.tick(e.cfg.Now()) })
		case <-ctx.Done():
			for {
				select {
				case in := <-e.in:
					e.takeGuarded(in)
					continue
				default:
				}
				break
			}
			e.guarded(func() { e.st.flush(e.cfg.Now()) })
			return
		}
	}
}

// guarded runs a step of the engine unless it is off; a panic turns it off (Config.OnPanic).
func (e *Engine) guarded(f func()) {
	if e.off {
		return
	}
	if p := guard.Run("engine", f); p != nil {
		e.off = true
		if e.cfg.OnPanic != nil {
			e.cfg.OnPanic(*p)
		}
	}
}

// takeGuarded takes one input; once the engine is off, it only relays Gunicorn's lines, parsed
// line by line, so that they still reach stdout in order.
func (e *Engine) takeGuarded(in input) {
	if in.line != nil {
		defer e.lines.give(len(in.line.line)) // whatever became of it, it is no longer queued
	}
	e.journal(in)
	if !e.off {
		e.relayed = false
		e.guarded(func() { e.take(in) })
		if !e.off || e.relayed {
			return
		}
	}
	if l := in.line; l != nil {
		guard.Run("engine", func() { e.st.out.Relay(l.stream, l.line, gunicorn.ParseLine(l.line), l.at) }) // marked: journaled
	}
}

func (e *Engine) take(in input) {
	switch {
	case in.line != nil:
		e.st.line(in.line.stream, in.line.line, in.line.at)
	case in.probe != nil:
		e.st.probe(*in.probe)
	case in.sweep != nil:
		if in.sweep.stats != nil {
			e.st.containerSample(*in.sweep.stats)
		}
		for _, ev := range in.sweep.probes {
			e.st.probe(ev)
		}
	case in.oom != nil:
		e.st.oom(*in.oom, e.cfg.Now())
	case in.signal != nil:
		e.st.signal(in.signal.sig, in.signal.forwarded, in.signal.at)
	case in.exit != nil:
		e.st.childExit(*in.exit, e.cfg.Now())
	case in.root != 0:
		e.st.root = in.root
	case in.settings != nil:
		e.st.setSettings(*in.settings)
	}
}

// budget bounds the bytes queued for the engine: take waits while they would pass max.
type budget struct {
	mu     sync.Mutex
	cond   sync.Cond
	used   int
	max    int
	closed bool
}

func (b *budget) init(max int) {
	b.max = max
	b.cond.L = &b.mu
}

// take waits until n more bytes fit, and counts them; a line longer than max is taken alone,
// once nothing else is queued. It returns false, at once, once the engine has stopped.
func (b *budget) take(n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.closed && b.used > 0 && b.used+n > b.max {
		b.cond.Wait()
	}
	if b.closed {
		return false
	}
	b.used += n
	return true
}

// give returns n bytes taken.
func (b *budget) give(n int) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	b.cond.Broadcast()
}

// close ends every wait: the engine takes nothing more.
func (b *budget) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cond.Broadcast()
}
