package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/gunicorn"
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
	// dirFD holds the hook's directory open (O_PATH) while requests are recorded: gwrap status,
	// run beside this gwrap, finds the directory through /proc/<pid>/fd (-1: none).
	dirFD int
}

// newStacks installs the hook when enabled, asking Gunicorn's master to report the settings
// named and its workers to record their requests (requests: the query mode; "" none); an install
// that fails is said once and gwrap goes on.
func newStacks(enabled bool, procRoot string, settings []string, requests string, ps *parts, warn func(string)) *stacks {
	s := &stacks{warn: warn, ps: ps, dirFD: -1}
	if !enabled {
		return s
	}
	h, err := pystack.Install(pystack.Options{Parent: hookParent(), ProcRoot: procRoot, Settings: settings, Requests: requests})
	if err != nil {
		s.why = pystack.Why(err)
		warn("Python stacks are off: " + err.Error())
		return s
	}
	s.hook = h
	if requests != "" {
		if fd, err := unix.Open(h.StackDir(), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			s.dirFD = fd
		}
	}
	return s
}

// hookParent is where the hook's private directory is made: /dev/shm when it is a tmpfs gwrap
// can write, else the system's temp dir. Workers keep their request files there in a shared
// mapping: on a disk-backed file system the kernel writes such pages back to disk, and a request
// storing into a page under writeback could wait for the disk.
func hookParent() string {
	const shm = "/dev/shm"
	var st unix.Statfs_t
	if unix.Statfs(shm, &st) == nil && st.Type == unix.TMPFS_MAGIC && unix.Access(shm, unix.W_OK) == nil {
		return shm
	}
	return os.TempDir()
}

// env is the child's environment: the hook's PYTHONPATH entry and variables when it is on.
func (s *stacks) env() []string {
	if s.hook == nil {
		return nil // inherit
	}
	return s.hook.Env(os.Environ())
}

func (s *stacks) close() {
	if s.dirFD >= 0 {
		_ = unix.Close(s.dirFD)
		s.dirFD = -1
	}
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

// reportedSettings returns the settings the Gunicorn master pid reported through the hook. The
// master writes them when its arbiter starts, before any worker, so they are normally there by the
// time it is found; a master that loaded the hook gets up to a second more, one that did not (a
// Python wrapper such as ddtrace-run loaded it and cleaned the environment before it exec'd
// Gunicorn, another sitecustomize shadows gwrap's, another user) none.
func (s *stacks) reportedSettings(ctx context.Context, pid int) (gunicorn.Settings, error) {
	if s.hook == nil {
		return gunicorn.Settings{}, fmt.Errorf("no stack hook (--python-stacks off, or it could not be installed)")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for first := true; ; first = false {
		b, err := s.hook.Settings(pid)
		if err == nil {
			st, _, err := gunicorn.ParseReported(b)
			return st, err
		}
		if !errors.Is(err, pystack.ErrNoSettings) {
			return gunicorn.Settings{}, err
		}
		if first {
			if lerr := s.hook.Loaded(pid); lerr != nil {
				return gunicorn.Settings{}, lerr
			}
		}
		select {
		case <-ctx.Done():
			return gunicorn.Settings{}, err
		case <-tick.C:
		}
	}
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
