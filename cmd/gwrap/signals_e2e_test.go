package main

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/internal/testkit"
)

// signalsRun is a gwrap running Debian's Gunicorn with a 3 s timeout on the shared app.
type signalsRun struct {
	p    *proc
	base string
}

func startSignalsRun(t *testing.T, wrap func([]string) []string, args ...string) *signalsRun {
	t.Helper()
	testkit.RequireRoot(t)
	port := freePort(t)
	g := append([]string{testkit.Gunicorn(t), "--chdir", testkit.AppsDir(), "wsgi:app", "--bind", fmt.Sprintf("127.0.0.1:%d", port),
		"--timeout", "3", "--graceful-timeout", "1"}, args...)
	if wrap != nil {
		g = wrap(g)
	}
	argv := append([]string{gwrapBin, "--report-dir", t.TempDir(), "--"}, g...)
	r := &signalsRun{p: startCmd(t, exec.Command(argv[0], argv[1:]...), nil), base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gwrap's output:\n%s", strings.Join(r.p.stdout.snapshot(), "\n"))
		}
	})
	waitHTTP(t, r.base+"/", 30*time.Second)
	return r
}

// signalled waits for gwrap's event saying it forwarded sig.
func (r *signalsRun) signalled(t *testing.T, sig syscall.Signal) {
	t.Helper()
	r.p.signal(t, sig)
	name := unix.SignalName(sig)
	r.p.stdout.waitEvent(t, 10*time.Second, "the signal event for "+name, func(m map[string]any) bool {
		return m["event"] == "signal" && m["signal"] == name && m["forwarded"] == true
	})
}

// stuck sends a request that sleeps past the timeout and waits for its postmortem; it returns
// the postmortem and whether a worker.late for that worker came before it.
func (r *signalsRun) stuck(t *testing.T) (map[string]any, bool) {
	t.Helper()
	go get(r.base+"/sleep?30", 20*time.Second)
	pm := r.p.stdout.waitEvent(t, 30*time.Second, "a postmortem event", isEvent("postmortem"))
	for _, e := range r.p.stdout.events(t) {
		if e["event"] == "worker.late" && e["pid"] == pm["pid"] {
			return pm, true
		}
		if e["event"] == "postmortem" {
			break
		}
	}
	return pm, false
}

func (r *signalsRun) count(t *testing.T, name string) int {
	n := 0
	for _, e := range r.p.stdout.events(t) {
		if e["event"] == name {
			n++
		}
	}
	return n
}

// TestSignalsDoNotMuteTheWatch: WINCH (a terminal resize; Gunicorn ignores it unless daemonized),
// TTIN, and TTOU, which stops one worker, leave every other worker watched: a worker stuck
// afterwards is seen late and reported, and the worker TTOU stopped makes no report. A HUP that a
// shell in front never passes on stops nothing and mutes nothing.
func TestSignalsDoNotMuteTheWatch(t *testing.T) {
	t.Run("WINCH TTIN TTOU", func(t *testing.T) {
		r := startSignalsRun(t, nil, "--workers", "2")
		boots := func() int { return r.count(t, "worker.boot") }
		waitFor(t, 10*time.Second, "two workers watched", func() bool { return boots() >= 2 })
		r.signalled(t, syscall.SIGWINCH)
		r.p.signal(t, syscall.SIGTTIN)
		waitFor(t, 10*time.Second, "a third worker after TTIN", func() bool { return boots() >= 3 })
		r.p.signal(t, syscall.SIGTTOU)
		waitFor(t, 10*time.Second, "a worker stopped after TTOU", func() bool { return r.count(t, "worker.gone") >= 1 })
		pm, late := r.stuck(t)
		if !late {
			t.Error("no worker.late before the postmortem: the signals muted the watch")
		}
		if pm["cause"] != "blocked" {
			t.Errorf("cause %v", pm["cause"])
		}
		r.p.signal(t, syscall.SIGTERM)
		r.p.wait(t, 20*time.Second)
		if n := r.count(t, "postmortem"); n != 1 {
			t.Errorf("%d postmortems, want the stuck worker's alone", n)
		}
	})
	t.Run("a HUP the shell in front does not pass on", func(t *testing.T) {
		r := startSignalsRun(t, func(g []string) []string {
			return append([]string{"/bin/sh", "-c", `trap "" HUP; "$@"; exit $?`, "sh"}, g...)
		}, "--workers", "1")
		waitFor(t, 10*time.Second, "the worker watched", func() bool { return r.count(t, "worker.boot") >= 1 })
		r.signalled(t, syscall.SIGHUP)
		pm, late := r.stuck(t)
		if !late {
			t.Error("no worker.late before the postmortem: a HUP that stopped nothing muted the watch")
		}
		if pm["cause"] != "blocked" {
			t.Errorf("cause %v", pm["cause"])
		}
	})
}

// TestUpgrade: after USR2 the new master (the old master's child) and its workers are watched
// like the first; the old master's stop, as the upgrade ends, is no incident; a stuck worker of
// the new master is seen late and reported. A TERM to gwrap during the upgrade stops both
// masters gracefully: exit 0, within the stop budget, nothing forced.
func TestUpgrade(t *testing.T) {
	// newMaster waits for the upgrade's new master (the old master's child with children of its
	// own) and returns it and its first worker.
	newMaster := func(t *testing.T, old int) (int, int) {
		var master, worker int
		waitFor(t, 20*time.Second, "the new master and its worker", func() bool {
			for _, c := range childrenOf(old) {
				if kids := childrenOf(c); len(kids) > 0 {
					master, worker = c, kids[0]
					return true
				}
			}
			return false
		})
		return master, worker
	}
	oldMaster := func(t *testing.T, r *signalsRun) int {
		kids := childrenOf(r.p.cmd.Process.Pid)
		if len(kids) != 1 {
			t.Fatalf("gwrap's children %v, want the master", kids)
		}
		return kids[0]
	}
	t.Run("the new master is watched", func(t *testing.T) {
		r := startSignalsRun(t, nil, "--workers", "1")
		old := oldMaster(t, r)
		waitFor(t, 10*time.Second, "the worker watched", func() bool { return r.count(t, "worker.boot") >= 1 })
		r.signalled(t, syscall.SIGUSR2)
		master, worker := newMaster(t, old)
		r.p.stdout.waitEvent(t, 10*time.Second, "worker.boot of the new master's worker", func(m map[string]any) bool {
			return m["event"] == "worker.boot" && m["pid"] == float64(worker)
		})
		for _, e := range r.p.stdout.events(t) {
			if e["event"] == "worker.boot" && e["pid"] == float64(master) {
				t.Errorf("the new master %d was taken for a worker", master)
			}
		}
		// The upgrade ends as Gunicorn's docs say: the old master is stopped.
		if err := syscall.Kill(old, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		r.p.stdout.waitEvent(t, 20*time.Second, "gunicorn.new_master", isEvent("gunicorn.new_master"))
		pm, late := r.stuck(t)
		if !late || pm["cause"] != "blocked" {
			t.Errorf("the new master's stuck worker: late %v, cause %v", late, pm["cause"])
		}
		r.p.signal(t, syscall.SIGTERM)
		if code := r.p.wait(t, 20*time.Second); code != 0 {
			t.Errorf("exit code %d", code)
		}
		if n := r.count(t, "postmortem"); n != 1 {
			t.Errorf("%d postmortems, want the stuck worker's alone (the old master's stop is no incident)", n)
		}
	})
	t.Run("TERM during the upgrade", func(t *testing.T) {
		r := startSignalsRun(t, nil, "--workers", "1")
		old := oldMaster(t, r)
		r.signalled(t, syscall.SIGUSR2)
		master, _ := newMaster(t, old)
		// Let the watcher see the new master (a sweep a second), as it would in any real upgrade.
		waitFor(t, 10*time.Second, "two workers watched", func() bool { return r.count(t, "worker.boot") >= 2 })
		start := time.Now()
		r.p.signal(t, syscall.SIGTERM)
		code := r.p.wait(t, 20*time.Second)
		took := time.Since(start)
		t.Logf("gwrap exited %d after %v", code, took)
		if code != 0 {
			t.Errorf("exit code %d, want 0 (both masters stopped gracefully)", code)
		}
		for _, e := range r.p.stdout.events(t) {
			if e["event"] == "gunicorn.exit" && e["forced"] == true {
				t.Error("the stop budget ran out: a master was SIGKILLed")
			}
			if e["event"] == "postmortem" {
				t.Errorf("a postmortem for a graceful stop: %v", e["summary"])
			}
		}
		for _, pid := range []int{old, master} {
			if syscall.Kill(pid, 0) == nil {
				t.Errorf("master %d still runs", pid)
			}
		}
	})
}
