package probes

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// stat52 is a /proc/<pid>/stat line of Linux ≥ 3.5 (52 fields), with this state, flags and exit
// code; its comm has spaces and parentheses, as Gunicorn's process titles do.
func stat52(state string, flags, exitCode int) string {
	return "4242 (gunicorn: worker [a) (b]) " + state + " 100 4242 4242 0 -1 " + strconv.Itoa(flags) +
		" 10 0 0 0 5 3 0 0 20 0 1 0 777 1000 200 18446744073709551615 1 1 0 0 0 0 0 16781312 16386 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 " + strconv.Itoa(exitCode) + "\n"
}

func TestParseFate(t *testing.T) {
	const none = "SigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n"
	const kill = "SigPnd:\t0000000000000000\nShdPnd:\t0000000000000100\n"
	for _, c := range []struct {
		name, stat, status           string
		dying, killed, explained     bool
		wantState                    string
		wantStatus                   int
		wantStatusKnown, wantExiting bool
	}{
		{"alive", stat52("S", 0x400040, 0), none, false, false, false, "S", 0, true, false},
		{"a SIGKILL just sent (exit_code already 9, not yet exiting)", stat52("R", 0x400840, 9), kill, true, true, false, "R", 9, true, false},
		{"exiting of SIGKILL", stat52("R", 0x40044c, 9), kill, true, true, false, "R", 9, true, true},
		{"a zombie of SIGKILL", stat52("Z", 0x40844c, 9), kill, true, true, false, "Z", 9, true, true},
		{"a zombie of exit(1)", stat52("Z", 0x40844c, 1<<8), none, true, false, true, "Z", 256, true, true},
		{"a zombie of exit(0)", stat52("Z", 0x40844c, 0), none, true, false, true, "Z", 0, true, true},
		{"a zombie of SIGSEGV", stat52("Z", 0x40844c, 11|0x80), none, true, false, true, "Z", 139, true, true},
		{"exiting, its code not set yet", stat52("R", 0x40004c, 0), none, true, false, false, "R", 0, true, true},
		{"an old kernel (44 fields): no wait status", "4242 (w) Z 100 4242 4242 0 -1 4 10 0 0 0 5 3 0 0 20 0 1 0 777 1000 200 18446744073709551615 1 1 0 0 0 0 0 16781312 16386 0 0 0 17 1 0 0 0 0 0\n", none, true, false, false, "Z", 0, false, true},
	} {
		f, err := parseFate(4242, []byte(c.stat), []byte(c.status))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if f.Dying() != c.dying || f.Killed() != c.killed || f.Explained() != c.explained || f.State != c.wantState ||
			f.WaitStatus != c.wantStatus || f.StatusKnown != c.wantStatusKnown || f.Exiting != c.wantExiting ||
			f.PPID != 100 || f.ID != (ID{PID: 4242, StartTime: 777}) {
			t.Errorf("%s: %+v: dying %v killed %v explained %v", c.name, f, f.Dying(), f.Killed(), f.Explained())
		}
	}
	if _, err := parseFate(1, []byte("1 (x) S 0"), nil); err == nil {
		t.Error("a short stat parsed")
	}
}

// TestFateOfRealChildren reads real processes: children of this test, alive, SIGKILLed and left
// unreaped (zombies, as Gunicorn's workers are until the master reaps them), exited with a code,
// then reaped.
func TestFateOfRealChildren(t *testing.T) {
	fs := NewFS("/proc")
	start := func(args ...string) *exec.Cmd {
		cmd := exec.Command(args[0], args[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	zombie := func(pid int) Fate {
		deadline := time.Now().Add(10 * time.Second)
		for {
			if f := fs.Fate(ID{PID: pid}); f.State == "Z" || time.Now().After(deadline) {
				return f
			}
			time.Sleep(time.Millisecond)
		}
	}
	sleeper := start("sleep", "60")
	id, err := fs.ID(sleeper.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if f := fs.Fate(id); f.Dying() || f.PPID != os.Getpid() || f.ID != id {
		t.Errorf("a sleeping child: %+v", f)
	}
	kids, err := fs.Fates(os.Getpid())
	found := false
	for _, k := range kids {
		found = found || k.ID == id
	}
	if err != nil || !found {
		t.Errorf("Fates of this process: %+v, %v: no %v", kids, err, id)
	}
	if err := sleeper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if f := zombie(id.PID); f.State != "Z" || !f.Killed() || f.Explained() || !f.KillPending {
		t.Errorf("a SIGKILLed zombie: %+v", f)
	}
	sleeper.Wait()
	if f := fs.Fate(id); !f.Gone || !f.Dying() || f.Killed() {
		t.Errorf("a reaped child: %+v", f)
	}

	exiter := start("sh", "-c", "exit 3")
	if f := zombie(exiter.Process.Pid); f.State != "Z" || f.Killed() || !f.Explained() || f.WaitStatus != 3<<8 {
		t.Errorf("a zombie of exit 3: %+v", f)
	}
	other := ID{PID: exiter.Process.Pid, StartTime: 1}
	if f := fs.Fate(other); !f.Gone {
		t.Errorf("another start time must not match: %+v", f)
	}
}
