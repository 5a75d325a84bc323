package main

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/gwrap/gwrap/probes"
	"github.com/gwrap/gwrap/pystack"
)

// stacks takes workers' Python stacks for the watcher (late and stuck workers) and the engine
// (crashed ones) through package pystack's hook; with no hook every call says why there is none.
// Each call runs behind the part's guard: after a panic, stacks are off.
type stacks struct {
	hook *pystack.Hook // nil: off, or the hook could not be installed
	why  string        // why there are no stacks when hook is nil ("" when turned off)
	warn func(string)
	ps   *parts

	once sync.Once // Loaded is asked once, after the first worker booted
}

// newStacks installs the hook when enabled; an install that fails is said once and gwrap goes on.
func newStacks(enabled bool, procRoot string, ps *parts, warn func(string)) *stacks {
	s := &stacks{warn: warn, ps: ps}
	if !enabled {
		return s
	}
	h, err := pystack.Install(pystack.Options{ProcRoot: procRoot})
	if err != nil {
		s.why = pystack.Why(err)
		warn("Python stacks are off: " + err.Error())
		return s
	}
	s.hook = h
	return s
}

// env is the child's environment: the hook's PYTHONPATH entry and variables when it is on.
func (s *stacks) env() []string {
	if s.hook == nil {
		return nil // inherit
	}
	return s.hook.Env(os.Environ())
}

func (s *stacks) close() {
	if s.hook != nil {
		_ = s.hook.Close()
	}
}

// booted checks once, at the first worker, that Gunicorn's master loaded the hook, and says why
// not (a command that is not Python, python -I, another user).
func (s *stacks) booted(master int) {
	s.ps.run(partStacks, func() {
		fault(partStacks)
		if s.hook == nil || master == 0 {
			return
		}
		s.once.Do(func() {
			if err := s.hook.Loaded(master); err != nil {
				s.why = pystack.Why(err)
				s.warn("Python stacks are not available for this Gunicorn: " + err.Error())
			}
		})
	})
}

// take is probes.Options.Stack: the stack of a late or stuck worker, within a second.
func (s *stacks) take(pid int) (st *probes.PyStack) {
	if !s.ps.run(partStacks, func() { st = s.takeOne(pid) }) {
		return &probes.PyStack{Err: "Python stacks are off after an error in gwrap"}
	}
	return st
}

func (s *stacks) takeOne(pid int) *probes.PyStack {
	if s.hook == nil {
		if s.why == "" {
			return nil
		}
		return &probes.PyStack{Err: s.why}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := s.hook.Take(ctx, pid)
	if err != nil {
		return &probes.PyStack{Err: pystack.Why(err)}
	}
	return s.convert(pid, st)
}

// crash is engine.Config.CrashStack: the dump a worker that died of a signal left.
func (s *stacks) crash(pid int) (st *probes.PyStack) {
	s.ps.run(partStacks, func() { st = s.crashOne(pid) })
	return st
}

func (s *stacks) crashOne(pid int) *probes.PyStack {
	if s.hook == nil {
		return nil
	}
	st, ok := s.hook.Crash(pid)
	if !ok {
		return nil
	}
	return s.convert(pid, st)
}

// forget drops a gone worker's dump file, and now and then the files of processes nobody reported.
func (s *stacks) forget(pid int, now time.Time) {
	if s.hook == nil {
		return
	}
	s.ps.run(partStacks, func() {
		s.hook.Forget(pid)
		s.hook.Prune(now, time.Minute)
	})
}

func (s *stacks) convert(pid int, st pystack.Stack) *probes.PyStack {
	out := &probes.PyStack{Frames: st.Lines()}
	if c := st.DirtyCall(); c.Running {
		out.DirtyRunning, out.DirtyAction = true, c.Action
	}
	if top, ok := st.Top(); ok {
		out.Top, out.Thread = top.String(), top.Thread
		if src, err := s.hook.Source(pid, top.Frame); err == nil {
			out.Call = src
		}
	}
	return out
}
