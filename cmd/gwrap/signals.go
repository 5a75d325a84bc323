package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/output"
	"github.com/gwrap/gwrap/supervisor"
)

// early are the signals main subscribed to first thing (see subscribe); nil when run is called
// in-process (tests), and then supervise subscribes.
var early <-chan os.Signal

// subscribe makes every signal gwrap acts on its own, before anything else happens: the ones it
// forwards to Gunicorn and SIGCHLD (a TERM during start-up would otherwise kill gwrap, or be lost
// by a PID 1), and SIGPIPE: the runtime kills a program whose write to fd 1 or 2 fails with EPIPE
// unless SIGPIPE is notified (os/signal, "SIGPIPE"); notified, the write just fails, and gwrap
// goes on supervising (ignoring it would not do: the runtime re-raises it for fd 1 and 2).
func subscribe() (<-chan os.Signal, func()) {
	pipe := make(chan os.Signal, 1) // never read: a full channel drops, the write gets EPIPE
	signal.Notify(pipe, unix.SIGPIPE)
	ch := make(chan os.Signal, 128)
	signal.Notify(ch, append([]os.Signal{unix.SIGCHLD}, supervisor.Forwarded...)...)
	return ch, func() { signal.Stop(ch); signal.Stop(pipe) }
}

// supervising tells whether gwrap's arguments run a command (not explain, report or version,
// whose TERM and SIGPIPE keep their usual meaning).
func supervising(args []string) bool {
	if len(args) == 0 {
		return false
	}
	switch args[0] {
	case "explain", "report", "status", "version", "--version", "-h", "-help", "--help":
		return false
	}
	return true
}

// watchStartup takes the signals while gwrap starts (Gunicorn not yet running): a TERM, INT or
// QUIT cancels the returned context; the others are said and dropped. end stops the watch and
// returns the stop signal, if one came; after it, the signals are the supervisor's.
func watchStartup(sigs <-chan os.Signal, out *output.Writer) (ctx context.Context, end func() os.Signal) {
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan os.Signal, 1)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case sig := <-sigs:
				switch sig {
				case unix.SIGTERM, unix.SIGINT, unix.SIGQUIT:
					got <- sig
					cancel()
					return
				case unix.SIGCHLD: // the settings' Python ending; the supervisor reaps the rest
				default:
					out.StartupSignal(signalName(sig))
				}
			case <-quit:
				return
			}
		}
	}()
	return ctx, func() os.Signal {
		close(quit)
		<-done
		cancel()
		select {
		case sig := <-got:
			return sig
		default:
			return nil
		}
	}
}

// signalName is a signal as every event names it (SIGHUP), never in Go's words ("hangup").
func signalName(sig os.Signal) string {
	if s, ok := sig.(syscall.Signal); ok {
		if n := unix.SignalName(s); n != "" {
			return n
		}
	}
	return sig.String()
}

// exitAtStartup ends gwrap for a stop signal received before Gunicorn started: 128+N, as if the
// child had been killed by it, with the gwrap.exit line every run ends with.
func exitAtStartup(out *output.Writer, sig os.Signal, stderr io.Writer) (int, error) {
	n, _ := sig.(syscall.Signal)
	code := 128 + int(n)
	reason := fmt.Sprintf("received %s during start-up; Gunicorn was not started", signalName(sig))
	out.Finish(func() {
		out.Exit(output.Exit{Code: code, Reason: reason})
	}, outputFlush, stderr)
	return code, nil
}

// stoppedEvent says that the Gunicorn master was stopped (SIGSTOP, SIGTSTP…) or continued: a
// stopped master serves nothing and kills no late worker, so requests time out unseen.
func stoppedEvent(out *output.Writer, pid int, stopped bool, sig syscall.Signal) {
	if !stopped {
		out.Continued(pid)
		return
	}
	out.Stopped(pid, unix.SignalName(sig))
}
