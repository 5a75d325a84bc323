package main

import (
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/gwrap/gwrap/probes"
)

// TestTerminateWorkerChecksIdentity: gwrap, root, signals a worker only while it is the same
// process (its start time) and a child of the master; a real child stands in for the worker
// and the test process for the master.
func TestTerminateWorkerChecksIdentity(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	proc := probes.NewFS("/proc")
	fate := proc.Fate(probes.ID{PID: cmd.Process.Pid})
	if fate.Gone || fate.ID.StartTime == 0 {
		t.Fatalf("the child's fate: %+v", fate)
	}
	id := fate.ID
	for _, c := range []struct {
		name   string
		id     probes.ID
		master int
	}{
		{"another start time: its pid was reused", probes.ID{PID: id.PID, StartTime: id.StartTime + 1}, os.Getpid()},
		{"not a child of the master", id, os.Getppid()},
		{"no start time known", probes.ID{PID: id.PID}, os.Getpid()},
	} {
		if err := terminateWorker(proc, c.id, c.master); err == nil {
			t.Errorf("%s: signalled", c.name)
		}
	}
	if f := proc.Fate(id); f.Dying() {
		t.Fatalf("the child was signalled by a refused call: %+v", f)
	}
	if err := terminateWorker(proc, id, os.Getpid()); err != nil {
		t.Fatalf("the worker itself: %v", err)
	}
	err := cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("the child ended with %v (%v), want SIGTERM", err, ws)
	}
}

func TestSizeFlag(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "1048576": 1 << 20, "512M": 512 << 20, "512MiB": 512 << 20, "1G": 1 << 30,
		"1.5GiB": 3 << 29, "64k": 64 << 10, "2TB": 2 << 40} {
		var s size
		if err := s.Set(in); err != nil || uint64(s) != want {
			t.Errorf("%q: %d, %v; want %d", in, s, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1X", "MiB", "NaN", "1e30", "12 apples"} {
		var s size
		if err := s.Set(in); err == nil {
			t.Errorf("%q: accepted as %d", in, s)
		}
	}
}
