// Package supervisor is PID 1's job and nothing else: it starts the command in its own process
// group, is the one and only caller of wait4 (so it also reaps orphans, as PID 1 or as a child
// subreaper), forwards the signals a Gunicorn master understands, enforces a stop budget, maps the
// child's end to an exit code, and relays every line of the child's stdout and stderr.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Stream names one of the child's output streams.
type Stream string

// The child's output streams.
const (
	StreamStdout Stream = "stdout"
	StreamStderr Stream = "stderr"
)

// Errors of a command that cannot start; Run's error wraps one of them.
var (
	ErrNotFound      = errors.New("command not found")
	ErrNotExecutable = errors.New("command not executable")
)

// Forwarded are the signals passed on to the child: Gunicorn's master acts on each (TERM graceful
// stop, INT/QUIT quick stop, HUP reload, TTIN/TTOU one worker more/less, USR1 reopen logs, USR2
// binary upgrade, WINCH stop workers when daemonized). Never SIGCHLD, never the Go runtime's SIGURG.
var Forwarded = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGQUIT, unix.SIGHUP, unix.SIGTTIN,
	unix.SIGTTOU, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH}

// Config is what Run needs.
type Config struct {
	Argv       []string      // command and arguments; Argv[0] is looked up in PATH
	Env        []string      // nil: inherit
	Dir        string        // "": inherit
	StopBudget time.Duration // after TERM/INT/QUIT: how long the child gets before its group is SIGKILLed

	// Signals are the signals to act on: nil makes Run subscribe to Forwarded and SIGCHLD itself.
	// A caller that subscribed before Run (gwrap does so first thing, so that a TERM during its
	// start-up is its own) passes its channel.
	Signals <-chan os.Signal
	// ReapEvery is how often Run reaps without a SIGCHLD, in case one was lost (a full signal
	// channel drops it). Zero: 5 s when Run subscribes itself, 1 s with Signals (which may not
	// carry SIGCHLD); a caller whose Signals carry SIGCHLD sets the longer period, so that an
	// idle gwrap is not woken for nothing.
	ReapEvery time.Duration

	OnStart  func(pid int)                         // the child runs
	OnSignal func(sig os.Signal, forwarded bool)   // a signal was received (and forwarded or not)
	OnLine   func(s Stream, line []byte)           // one line, newline stripped; valid during the call
	OnReap   func(pid int, status unix.WaitStatus) // an orphan (not the child) was reaped
	OnAdopt  func(pid int)                         // after USR2, the new master became the child
	// BeforeStop is told of a TERM, INT or QUIT received, just before it is forwarded: the child
	// has not begun to stop, so what it is doing is what the stop will cut short. It runs on
	// Run's goroutine, between the signal and its forward: it must return at once.
	BeforeStop func(sig os.Signal)
	// OnStop is told, once each time, that the child was stopped (SIGSTOP, SIGTSTP…: stopped
	// true, with the signal) or continued (stopped false): a stopped master serves nothing.
	OnStop func(pid int, stopped bool, sig syscall.Signal)

	ProcRoot string // /proc (default), to find adopted children after USR2

	// Warn is told, once, a degradation to say (gwrap's config.warning, with code): today, that
	// gwrap is not PID 1 and cannot become a child subreaper. Nil: not said.
	Warn func(code, msg string)
	// Subreaper makes the calling process a child subreaper when it is not PID 1; nil:
	// prctl(PR_SET_CHILD_SUBREAPER). A seam for the test of its failure.
	Subreaper func() error

	// Upgrading, when set, lists the new masters of a USR2 binary upgrade under way (children of
	// the child): a stop signal (TERM, INT, QUIT, or the stop on cancel) goes to them as well,
	// so that both masters stop together and gracefully. A new master that becomes the child
	// after a stop was asked gets the stop signal too.
	Upgrading func() []int

	// ChildOOMScoreAdj raises the child's oom_score_adj this much above gwrap's own (0: leave it),
	// so that when the container runs out of memory the kernel picks a worker (which inherits it
	// from the master) before gwrap: gwrap's death is the container's. Raising needs no privilege.
	ChildOOMScoreAdj int

	// MaxLine is the longest line delivered whole (default 1 MiB); longer ones come in pieces
	// of that size. A piece is copied a few times on its way to stdout (and a byte may take six
	// once escaped in JSON): the bound keeps gwrap's memory small whatever the app prints.
	MaxLine int

	// Drain bounds the wait for the child's output once it has exited, when a descendant keeps
	// the pipes open (default 2 s); then the group is SIGKILLed, and drainGrace later gwrap
	// closes its ends of the pipes: a process outside the group (a setsid daemon) holding them
	// does not keep Run, and a container, running.
	Drain time.Duration
}

// drainGrace is how long the pipes are still read after the group was SIGKILLed at the drain
// deadline: what the killed processes wrote is still in the pipe.
const drainGrace = 200 * time.Millisecond

// ParentDeath is the signal the child gets when gwrap dies without stopping it (SIGKILLed, OOM
// killed), when gwrap is not PID 1 (as PID 1 its death ends the container). SIGTERM rather than
// SIGKILL: with nobody left to supervise it, Gunicorn's own graceful stop (bounded by its
// graceful_timeout) lets the workers finish their requests and stop, where a SIGKILLed master
// would orphan its workers until each notices its parent changed; and TERM ends any other command
// too.
const ParentDeath = unix.SIGTERM

// Result is how the child ended.
type Result struct {
	ExitCode int            // the child's code; 128+signal when killed; 127 not found; 126 not executable
	Signal   syscall.Signal // the signal that killed the child, if one did
	Forced   bool           // the stop budget ran out and the group was SIGKILLed
	Reason   string         // one sentence for humans
	// DrainCut: after the child exited, something outside its process group still held its
	// output pipes at the drain deadline; gwrap closed its ends (that process's later lines are
	// lost).
	DrainCut bool
}

// Run starts the command, supervises it until it exits, and returns only once its output is
// drained. Cancelling ctx is a stop request, like TERM.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if len(cfg.Argv) == 0 {
		return Result{ExitCode: 127, Reason: "no command"}, fmt.Errorf("%w: empty command", ErrNotFound)
	}
	if cfg.MaxLine <= 0 {
		cfg.MaxLine = 1 << 20
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 2 * time.Second
	}
	path, err := lookPath(cfg.Argv[0])
	if err != nil {
		return startFailure(err)
	}

	sigs := cfg.Signals
	if sigs == nil {
		ch := make(chan os.Signal, 128)
		signal.Notify(ch, append([]os.Signal{unix.SIGCHLD}, Forwarded...)...)
		defer signal.Stop(ch)
		sigs = ch
	}
	if os.Getpid() != 1 {
		// Orphans of the child's tree come to us, not to the host's init: we reap them. Like
		// tini, say it when that fails: zombies pile up and a USR2 upgrade is not followed.
		become := cfg.Subreaper
		if become == nil {
			become = func() error { return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }
		}
		if err := become(); err != nil && cfg.Warn != nil {
			cfg.Warn("subreaper", fmt.Sprintf("gwrap is not PID 1 and cannot become a child subreaper (prctl PR_SET_CHILD_SUBREAPER: %v): "+
				"orphans of Gunicorn's tree go to the host's init, so gwrap does not reap them and cannot follow a new master after a USR2 upgrade; "+
				"run gwrap as the container's entrypoint (PID 1)", err))
		}
	}

	outR, outW, err := os.Pipe()
	if err != nil {
		return Result{ExitCode: 1, Reason: "cannot create a pipe"}, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return Result{ExitCode: 1, Reason: "cannot create a pipe"}, fmt.Errorf("stderr pipe: %w", err)
	}
	sys := &syscall.SysProcAttr{Setpgid: true}
	if os.Getpid() != 1 {
		// The parent-death signal is sent when the forking *thread* ends, not the process
		// (SysProcAttr.Pdeathsig, golang/go#27505): this goroutine stays locked to its thread
		// until Run returns, and a locked thread is never reused nor ended by the runtime.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		sys.Pdeathsig = ParentDeath
	}
	pid, err := syscall.ForkExec(path, cfg.Argv, &syscall.ProcAttr{
		Dir:   cfg.Dir,
		Env:   envOrInherit(cfg.Env),
		Files: []uintptr{os.Stdin.Fd(), outW.Fd(), errW.Fd()},
		Sys:   sys,
	})
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return startFailure(fmt.Errorf("%s: %w", cfg.Argv[0], err))
	}
	if cfg.ChildOOMScoreAdj > 0 {
		_ = raiseOOMScoreAdj(cfg.ProcRoot, pid, cfg.ChildOOMScoreAdj) // best effort: a read-only /proc changes nothing else
	}
	if cfg.OnStart != nil {
		cfg.OnStart(pid)
	}

	onLine := cfg.OnLine
	if onLine == nil {
		onLine = func(Stream, []byte) {}
	}
	drained := make(chan struct{}, 2)
	go func() { relay(outR, StreamStdout, cfg.MaxLine, onLine); outR.Close(); drained <- struct{}{} }()
	go func() { relay(errR, StreamStderr, cfg.MaxLine, onLine); errR.Close(); drained <- struct{}{} }()

	s := &supervision{cfg: cfg, main: pid, pgid: pid}
	res := s.loop(ctx, sigs)

	// The child is gone; its descendants may still hold the pipes. Give them Drain, keep
	// reaping; then SIGKILL the group, and drainGrace later close our ends whoever holds theirs.
	timer := time.NewTimer(cfg.Drain)
	defer timer.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	killed := false
	for n := 0; n < 2; {
		select {
		case <-drained:
			n++
		case <-sigs:
			s.reap()
		case <-tick.C:
			s.reap()
		case <-timer.C:
			if !killed {
				killed = true
				_ = unix.Kill(-s.pgid, unix.SIGKILL)
				timer.Reset(drainGrace)
				continue
			}
			res.DrainCut = true
			outR.Close() // the relay's blocked Read returns
			errR.Close()
		}
	}
	s.reap()
	return res, nil
}

// supervision is Run's state while the child lives; only Run's goroutine touches it.
type supervision struct {
	cfg      Config
	main     int // the child (after USR2, the adopted new master)
	pgid     int
	usr2     bool
	stopSig  syscall.Signal // the stop signal forwarded, 0 before any
	stopped  map[int]bool   // the upgrade's new masters the stop signal was passed on to
	forced   bool
	mainDone bool
	status   unix.WaitStatus
}

func (s *supervision) loop(ctx context.Context, sigs <-chan os.Signal) Result {
	var budget <-chan time.Time
	startBudget := func() {
		if budget == nil {
			budget = time.After(s.cfg.StopBudget)
		}
	}
	done := ctx.Done()
	// SIGCHLDs coalesce, which draining every exited child handles; a slow tick reaps as well,
	// in case one is lost (see Config.ReapEvery).
	every := s.cfg.ReapEvery
	switch {
	case every > 0:
	case s.cfg.Signals != nil:
		every = time.Second
	default:
		every = 5 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		s.reap()
		if s.mainDone {
			if s.adopt() {
				continue
			}
			return s.result()
		}
		select {
		case sig := <-sigs:
			if sig == unix.SIGCHLD {
				continue
			}
			stop := sig == unix.SIGTERM || sig == unix.SIGINT || sig == unix.SIGQUIT
			if stop && s.cfg.BeforeStop != nil {
				s.cfg.BeforeStop(sig)
			}
			err := unix.Kill(s.main, sig.(syscall.Signal))
			if s.cfg.OnSignal != nil {
				s.cfg.OnSignal(sig, err == nil)
			}
			switch {
			case stop:
				s.stopUpgrade(sig.(syscall.Signal))
				startBudget()
			case sig == unix.SIGUSR2:
				s.usr2 = true
			}
		case <-done:
			done = nil
			_ = unix.Kill(s.main, unix.SIGTERM)
			s.stopUpgrade(unix.SIGTERM)
			startBudget()
		case <-budget:
			s.forced = true
			_ = unix.Kill(-s.pgid, unix.SIGKILL)
			budget = nil
		case <-tick.C:
		}
	}
}

// stopUpgrade passes a stop signal on to the new masters of a USR2 upgrade under way: the old
// master, which got it, stops only its own workers, and its new master would otherwise serve on
// until the budget's SIGKILL.
func (s *supervision) stopUpgrade(sig syscall.Signal) {
	if s.stopSig == 0 {
		s.stopSig = sig
	}
	if !s.usr2 || s.cfg.Upgrading == nil {
		return
	}
	for _, pid := range s.cfg.Upgrading() {
		if pid != s.main && pid > 0 && !s.stopped[pid] {
			if s.stopped == nil {
				s.stopped = map[int]bool{}
			}
			s.stopped[pid] = true
			_ = unix.Kill(pid, sig)
		}
	}
}

// reap collects every exited child: the main one and any adopted orphan.
func (s *supervision) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WUNTRACED|unix.WCONTINUED, nil)
		if err == unix.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		if ws.Stopped() || ws.Continued() {
			if pid == s.main && s.cfg.OnStop != nil {
				var sig syscall.Signal
				if ws.Stopped() {
					sig = ws.StopSignal()
				}
				s.cfg.OnStop(pid, ws.Stopped(), sig)
			}
			continue
		}
		if pid == s.main && !s.mainDone {
			s.mainDone, s.status = true, ws
			continue
		}
		if s.cfg.OnReap != nil {
			s.cfg.OnReap(pid, ws)
		}
	}
}

// adopt follows Gunicorn's binary upgrade: after a forwarded USR2 the new master is a child of the
// old one; when the old one exits it is reparented to us. If such a process of the child's group
// lives, it becomes the child.
func (s *supervision) adopt() bool {
	if !s.usr2 {
		return false
	}
	for _, pid := range ownChildren(s.cfg.ProcRoot) {
		if pgid, err := unix.Getpgid(pid); err == nil && pgid == s.pgid {
			s.main, s.mainDone, s.usr2 = pid, false, false
			if s.cfg.OnAdopt != nil {
				s.cfg.OnAdopt(pid)
			}
			if s.stopSig != 0 && !s.stopped[pid] {
				// A stop was asked during the upgrade: it is the new master's too (once: a
				// second TERM during Python's exit, its handlers gone, would kill it).
				_ = unix.Kill(pid, s.stopSig)
			}
			return true
		}
	}
	return false
}

func (s *supervision) result() Result {
	ws := s.status
	r := Result{Forced: s.forced}
	switch {
	case ws.Signaled():
		r.Signal = ws.Signal()
		r.ExitCode = 128 + int(r.Signal)
		r.Reason = fmt.Sprintf("killed by %s", signalName(r.Signal))
	default:
		r.ExitCode = ws.ExitStatus()
		r.Reason = fmt.Sprintf("exited with code %d", r.ExitCode)
	}
	if s.forced {
		r.Reason += fmt.Sprintf(" after the %v stop budget ran out (SIGKILL sent to its process group)", s.cfg.StopBudget)
	}
	return r
}

// ownChildren lists our own live children, from <proc>/self/task/*/children.
func ownChildren(proc string) []int {
	var out []int
	tasks, _ := os.ReadDir(proc + "/self/task")
	for _, t := range tasks {
		b, err := os.ReadFile(proc + "/self/task/" + t.Name() + "/children")
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil {
				out = append(out, pid)
			}
		}
	}
	return out
}

// signalName is SIGKILL for 9, as people write it.
func signalName(sig syscall.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return fmt.Sprintf("signal %d", int(sig))
}

// lookPath resolves the command like a shell and tells "not found" from "not executable".
func lookPath(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	if strings.Contains(name, "/") {
		if st, serr := os.Stat(name); serr == nil {
			if st.IsDir() {
				return "", fmt.Errorf("%w: %s is a directory", ErrNotExecutable, name)
			}
			return "", fmt.Errorf("%w: %s", ErrNotExecutable, name)
		}
	}
	if errors.Is(err, fs.ErrPermission) {
		return "", fmt.Errorf("%w: %s", ErrNotExecutable, name)
	}
	return "", fmt.Errorf("%w: %s", ErrNotFound, name)
}

func startFailure(err error) (Result, error) {
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, unix.ENOENT):
		if !errors.Is(err, ErrNotFound) {
			err = fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return Result{ExitCode: 127, Reason: "command not found"}, err
	default:
		if !errors.Is(err, ErrNotExecutable) {
			err = fmt.Errorf("%w: %w", ErrNotExecutable, err)
		}
		return Result{ExitCode: 126, Reason: "command not executable"}, err
	}
}

func envOrInherit(env []string) []string {
	if env == nil {
		return os.Environ()
	}
	return env
}
