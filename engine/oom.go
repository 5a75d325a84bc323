package engine

import (
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
)

// Which worker the kernel's OOM killer killed.
//
// The cgroup's oom_kill counter says how many processes were killed, never which. Each move is
// matched to the processes whose own evidence fits it — never to the first candidate found, and
// never to a death that something else already explains. The evidence, and where it holds:
//
//   - When the counter moves. The kernel counts the kill (memcg_memory_event_mm MEMCG_OOM_KILL
//     in __oom_kill_process, "raise event before sending signal") and then sends the SIGKILL, on
//     v1 (memory.oom_control's oom_kill) and v2 (memory.events' oom_kill) alike: the victim is
//     alive, with the SIGKILL pending, when the counter moves, and is reaped only after. Measured
//     on v1 (Linux 6.18): the counter read 1 while the victim still had SIGKILL pending, 1 ms
//     before it was a zombie and 6 ms before the master reaped it (and the same on v2 in the
//     guest kernel, internal/v2test). What lags is the notification: v1's eventfd fires as the
//     cgroup enters OOM, before the killer chose (memwatch/oom_linux.go: the counter is unmoved
//     at the wake-up), and v2's inotify on memory.events is rate-limited to one per 20 ms; so
//     memwatch re-reads the counter every 5 ms until it moves, and says when it last saw it
//     unmoved (OOMEvent.After) and when the notification came (OOMEvent.Woke). A worker reaped
//     before that unmoved read cannot be the victim. When the first read after a notification
//     already sees the move, that read before it may be seconds old: the notification, not a
//     bound, then says the move was just now.
//   - What /proc shows right after the move (Engine.OOM reads the master's children before the
//     event is queued): the victim is there, dying of SIGKILL — SIGKILL in ShdPnd (it stays there
//     until the reaping, zombie included) or a wait status (stat field 52, Linux ≥ 3.5) of
//     SIGKILL — unless it was reaped in the meantime. A child alive then was not killed; one
//     dying with an exit code or another signal was not the OOM killer's. Read within
//     promptRead of the last unmoved read or of the notification, the workers dying of SIGKILL
//     are the victims: the victim is rarely reaped that soon, and another SIGKILL within that
//     same instant is rarer still.
//   - What gwrap saw before: a sample after the move showing the worker alive with no SIGKILL
//     pending rules it out; so does a death seen (vanish, the master's death line) before the
//     last unmoved read; so does a death explained — a handled abort ("Worker exiting"), an exit
//     code, another signal. These hold on v1 and v2; the master's lines come a little late,
//     hence oomSettle. Of the deaths left, the closest to the move wins: one seen more than
//     wakeSlack before the notification is passed over for one that fits it (the victim may be
//     reaped before /proc is read, when gwrap is slow to take the notification, and another
//     worker killed half a second earlier is not it).
//   - The memory each held in its last samples: the OOM killer picks the largest oom_score
//     (resident + swap + page tables, all workers sharing the oom_score_adj gwrap gave Gunicorn).
//     The samples are up to a second old and the victim is the one that grew since, so this
//     never decides; each report quotes its worker's figure.
//
// When the evidence leaves more candidates than kills (two workers SIGKILLed within the same
// poll of the counter), each of them is reported with the others named and low confidence.
const (
	// oomSettle is how long a move waits for the lines and vanishes that place the deaths around
	// it, unless the kernel's own evidence named its victims at once.
	oomSettle = 1500 * time.Millisecond
	// promptRead: /proc read this soon after the counter was last seen unmoved still shows the
	// victim dying, not yet reaped. memwatch reads the counter every 5 ms after a notification;
	// under load a read comes up to ~50 ms after the one before (measured: 5–48 ms, the victim
	// still unreaped every time).
	promptRead = 100 * time.Millisecond
	// wakeSlack is how long before the notification came the move may have happened: v2's
	// inotify comes up to 20 ms after the move, and gwrap may be slow to take it.
	wakeSlack = 250 * time.Millisecond
	// unknownAfter bounds how long before its event a move with no earlier read happened.
	unknownAfter = 5 * time.Second
)

// oomIn is an OOM event with what /proc showed of the master's children just after it.
type oomIn struct {
	ev     memwatch.OOMEvent
	fates  []probes.Fate
	seen   bool // fates were read
	seenAt time.Time
}

// oomKill is one move of the counter while its victims are being named.
type oomKill struct {
	at, after time.Time                 // the counter moved in (after, at]
	woke      time.Time                 // the kernel's notification came, close to the move (zero: none)
	count     uint64                    // victims not yet named
	seenAt    time.Time                 // when the master's children were read (zero: not read)
	fates     map[probes.ID]probes.Fate // the master's children then
	later     map[probes.ID]probes.Fate // the other workers, read once the event was taken
	due       time.Time
}

// near is when the move happened at the earliest, as far as the notification tells: a death seen
// before it was far from the move. Without a notification it is the last unmoved read.
func (k *oomKill) near() time.Time {
	if k.woke.IsZero() {
		return k.after
	}
	return maxTime(k.after, k.woke.Add(-wakeSlack))
}

// prompt reports whether /proc was read soon enough after the move to show the victims dying:
// soon after the last unmoved read of the counter, or after the notification that led to it.
func (k *oomKill) prompt() bool {
	near := maxTime(k.after, k.woke)
	return !k.seenAt.IsZero() && k.seenAt.Sub(near) <= promptRead
}

// fateOf is what /proc showed of the worker around the move; withChildren says it was read with
// the master's children, right after the move.
func (k *oomKill) fateOf(w *worker) (f probes.Fate, seen, withChildren bool) {
	if f, ok := k.fates[w.id]; ok {
		return f, true, true
	}
	if w.id.StartTime == 0 { // known from a line only: whatever child has its pid
		for id, f := range k.fates {
			if id.PID == w.id.PID {
				return f, true, true
			}
		}
	}
	f, seen = k.later[w.id]
	return f, seen, false
}

// standing is how a worker stands against one move of the counter.
type standing int

const (
	notVictim   standing = iota // alive after the move, dead before it, or its death explained
	mayBe                       // gone around the move, and nothing rules it out
	beingKilled                 // /proc showed it dying of SIGKILL right after the move
)

// oom takes a move of the oom_kill counter: the victims /proc shows being killed are named at
// once; otherwise the move waits oomSettle for the evidence that places the deaths around it.
func (s *state) oom(in oomIn, now time.Time) {
	e := in.ev
	if !s.oomCount.reported(e) {
		return // the sweep saw this move first and it was taken then (oom_sampled.go)
	}
	k := &oomKill{at: e.Time, after: e.After, woke: e.Woke, count: e.Count, fates: map[probes.ID]probes.Fate{},
		later: map[probes.ID]probes.Fate{}, due: e.Time.Add(oomSettle)}
	if k.after.IsZero() || k.after.After(k.at) {
		k.after = k.at.Add(-unknownAfter)
	}
	if in.seen {
		k.seenAt = in.seenAt
		for _, f := range in.fates {
			k.fates[f.ID] = f
		}
	}
	for _, w := range s.w.byID {
		if f, ok, _ := k.fateOf(w); ok {
			if f.Dying() {
				w.endAt = minTime(w.endAt, k.seenAt)
			}
			continue
		}
		if w.gone() || s.cfg.Fate == nil {
			continue
		}
		// Not a child of the master as /proc was read (reaped, or a worker of an old master
		// after a USR2 upgrade): ask about it alone.
		if f := s.cfg.Fate(w.id); f.Gone {
			w.endAt = minTime(w.endAt, now)
		} else {
			k.later[w.id] = f
		}
	}
	victims := s.nameVictims(k, false)
	pids := []int{}
	for _, w := range victims {
		pids = append(pids, w.id.PID)
	}
	msg := fmt.Sprintf("the kernel OOM killer killed %d process(es) in the container", e.Count)
	if len(pids) == 0 {
		msg += "; the victim is not identified yet (its post-mortem will name it)"
	}
	if k.count > 0 {
		s.ooms = append(s.ooms, k)
	}
	s.emit(ev(e.Time, Error, "oom.kill", msg, f("count", e.Count), f("total", e.Total), f("pids", pids)).with(OOMKill{Count: e.Count}))
}

// unclaimedOOM names the victims of every move still open among the workers whose evidence fits,
// and returns the kills left unnamed: as the command dies of SIGKILL, its own.
func (s *state) unclaimedOOM(at time.Time) uint64 {
	if e, ok := s.oomCount.due(at.Add(oomEventWait)); ok {
		s.oom(oomIn{ev: e}, at) // a move only the sweep saw
	}
	s.resolveOOM(at, true)
	var n uint64
	for _, u := range s.unnamed {
		if at.Sub(u.at) <= unnamedKeep {
			n += u.n
		}
	}
	s.unnamed = nil
	return n
}

// unnamedOOM is a move's kills no worker took: the command's own when it dies of SIGKILL soon after.
type unnamedOOM struct {
	at time.Time
	n  uint64
}

// unnamedKeep is how long before the command's SIGKILL an unnamed kill can be its own: the
// notification and the reaping come within a second or two of the kill.
const unnamedKeep = 5 * time.Second

// resolveOOM names the victims of the moves whose settle time has passed (all of them when
// final). Moves are taken in order, so a worker named by one is not a candidate of the next.
func (s *state) resolveOOM(now time.Time, final bool) {
	kept := s.ooms[:0]
	for _, k := range s.ooms {
		if final || !now.Before(k.due) {
			s.nameVictims(k, true)
			if k.count > 0 {
				s.unnamed = append(slices.DeleteFunc(s.unnamed, func(u unnamedOOM) bool { return now.Sub(u.at) > unnamedKeep }),
					unnamedOOM{at: k.at, n: k.count})
			}
			continue
		}
		kept = append(kept, k)
	}
	for i := len(kept); i < len(s.ooms); i++ {
		s.ooms[i] = nil
	}
	s.ooms = kept
}

// nameVictims gives the move to the workers whose own evidence fits it. Before the settle time
// (final false) it names only the workers /proc showed being killed right after a promptly read
// move, when they are no more than the kills; at the settle time it names every candidate left,
// and when they are more than the kills, each is told about the others (the report says gwrap
// cannot tell them apart).
func (s *state) nameVictims(k *oomKill, final bool) []*worker {
	var killed, near, far []*worker
	for _, w := range s.w.byID {
		switch s.standing(k, w) {
		case beingKilled:
			killed = append(killed, w)
		case mayBe:
			if !w.endAt.IsZero() && w.endAt.Before(k.near()) {
				far = append(far, w)
			} else {
				near = append(near, w)
			}
		}
	}
	// The closest to the move first: the workers /proc showed being killed right after it, then
	// those whose death fits it closely, then the others.
	pool := append(killed, near...)
	switch {
	case k.prompt() && len(killed) > 0:
		pool = killed
	case len(pool) == 0:
		pool = far
	}
	n := int(k.count)
	if !final && !(k.prompt() && len(killed) > 0 && len(killed) <= n) {
		return nil
	}
	if len(pool) == 0 || n == 0 {
		return nil
	}
	sort.Slice(pool, func(i, j int) bool { return pool[i].id.PID < pool[j].id.PID })
	shared := len(pool) > n
	for _, w := range pool {
		inc := s.incidentFor(w, k.at)
		inc.oomKills = 1
		if shared {
			for _, o := range pool {
				if o != w {
					inc.oomShared = append(inc.oomShared, o.id.PID)
				}
			}
		}
	}
	k.count -= uint64(min(n, len(pool)))
	return pool
}

// standing says how a worker stands against one move of the counter, from its own evidence.
func (s *state) standing(k *oomKill, w *worker) standing {
	if w.reported || w.inc != nil && w.inc.oomKills > 0 {
		return notVictim // reported already, or another move's victim: a process dies once
	}
	fate, seen, withChildren := k.fateOf(w)
	switch {
	case seen && fate.Killed() && withChildren:
		return beingKilled // the kernel's evidence, read right after the move: it outweighs any line
	case seen && !fate.Dying():
		return notVictim // alive after the move
	case seen && fate.Explained():
		return notVictim // an exit code or another signal
	case s.explained(w):
		return notVictim
	case w.aliveAt.After(k.at):
		return notVictim // a sample after the move showed it alive, no SIGKILL pending
	case !w.endAt.IsZero() && !w.endAt.After(k.after):
		return notVictim // it was dead before the move
	case seen || !w.endAt.IsZero():
		return mayBe // dying of something unknown, or gone, around the move
	}
	return notVictim // nothing says it died
}

// explained reports whether the worker's lines explain its death by something else than a
// SIGKILL: it handled an abort or exited on its own ("Worker exiting"), the master logged an exit
// code or another signal.
func (s *state) explained(w *worker) bool {
	if w.exiting {
		return true
	}
	inc := w.inc
	return inc != nil && (inc.exitCode != nil || inc.signal != 0 && inc.signal != 9)
}

// parents are the processes whose children Engine.OOM reads the moment the counter moved: the
// command until the watcher finds a master, then every master it found (the first, and a USR2
// upgrade's new one while both serve) and the dirty arbiter (whose children are the dirty
// workers). The watcher's goroutine writes them (Engine.Probe), the OOM watcher's reads them.
type parents struct {
	mu   sync.Mutex
	root int   // the command, read until a master is found
	pids []int // the masters and the arbiter found and not gone, at most maxParents
}

// maxParents bounds the parents read: a master, a new one during an upgrade, their arbiters.
const maxParents = 8

func (p *parents) started(root int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.root = root
}

// saw takes a watcher's event: a master or an arbiter found, or gone.
func (p *parents) saw(ev probes.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev.Kind {
	case probes.EventMaster, probes.EventArbiter:
		if !slices.Contains(p.pids, ev.ID.PID) && len(p.pids) < maxParents {
			p.pids = append(p.pids, ev.ID.PID)
		}
	case probes.EventMasterGone, probes.EventArbiterGone:
		p.pids = slices.DeleteFunc(p.pids, func(pid int) bool { return pid == ev.ID.PID })
	}
}

// list returns the pids whose children to read now.
func (p *parents) list() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pids) == 0 && p.root != 0 {
		return []int{p.root}
	}
	return slices.Clone(p.pids)
}
