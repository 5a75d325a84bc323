package engine

import (
	"time"

	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
)

// fakeProc stands in for /proc in the engine's tests: the processes there, each with its fate
// (a pid it does not hold is gone), the master's children among them.
type fakeProc struct {
	master int
	procs  map[int]probes.Fate
}

func newFakeProc(master int) *fakeProc {
	return &fakeProc{master: master, procs: map[int]probes.Fate{}}
}

// install makes st read this /proc.
func (p *fakeProc) install(st *state) {
	st.cfg.Fate, st.cfg.Fates = p.fate, p.fates
}

// child puts a live child of the master in /proc.
func (p *fakeProc) child(id probes.ID) {
	p.procs[id.PID] = probes.Fate{ID: id, PPID: p.master, State: "S", StatusKnown: true}
}

// other puts a live process that is not the master's child in /proc.
func (p *fakeProc) other(id probes.ID) {
	p.procs[id.PID] = probes.Fate{ID: id, PPID: 1, State: "S", StatusKnown: true}
}

// kill sends the process a SIGKILL (the OOM killer's, or kill(2)'s): it stays in ShdPnd.
func (p *fakeProc) kill(pid int) {
	f := p.procs[pid]
	f.KillPending, f.State = true, "R"
	p.procs[pid] = f
}

// exit makes the process a zombie with this wait status (exit code << 8, or a signal).
func (p *fakeProc) exit(pid, status int) {
	f := p.procs[pid]
	f.State, f.Exiting, f.WaitStatus = "Z", true, status
	p.procs[pid] = f
}

// reap removes the process: its parent waited for it.
func (p *fakeProc) reap(pid int) { delete(p.procs, pid) }

func (p *fakeProc) fate(id probes.ID) probes.Fate {
	f, ok := p.procs[id.PID]
	if !ok || id.StartTime != 0 && f.ID.StartTime != id.StartTime {
		return probes.Fate{ID: probes.ID{PID: id.PID}, Gone: true}
	}
	return f
}

func (p *fakeProc) fates(master int) ([]probes.Fate, error) {
	var out []probes.Fate
	for _, f := range p.procs {
		if f.PPID == master {
			out = append(out, f)
		}
	}
	return out, nil
}

// moved hands st a move of the oom_kill counter by count, read at `at` and last seen unmoved
// `lag` before, with the master's children read 1 ms after, as Engine.OOM reads them.
func (p *fakeProc) moved(st *state, at time.Time, lag time.Duration, count uint64) {
	fates, _ := p.fates(p.master)
	seen := at.Add(time.Millisecond)
	st.oom(oomIn{ev: memwatch.OOMEvent{Time: at, After: at.Add(-lag), Count: count}, fates: fates, seen: true, seenAt: seen}, seen)
}

// notified hands st a move of the counter seen at `at`, after a notification taken at woke, the
// counter last read unmoved at after, with the master's children read 1 ms after `at`.
func (p *fakeProc) notified(st *state, at, after, woke time.Time, count uint64) {
	fates, _ := p.fates(p.master)
	seen := at.Add(time.Millisecond)
	st.oom(oomIn{ev: memwatch.OOMEvent{Time: at, After: after, Woke: woke, Count: count}, fates: fates, seen: true, seenAt: seen}, seen)
}

// sample is the watcher's sample of a worker as this /proc shows it.
func (p *fakeProc) sample(id probes.ID, at time.Time, hb time.Duration, rss uint64) probes.Event {
	f := p.procs[id.PID]
	return probes.Event{Kind: probes.EventSample, ID: id, Time: at, Sample: probes.Sample{Time: at, State: f.State,
		KillPending: f.KillPending, RSSAnon: rss, HeartbeatAge: hb, Heartbeats: true, CPUUser: 1}}
}
