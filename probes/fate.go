package probes

import (
	"errors"
	"fmt"
	"os"
)

// Fate is what /proc shows of a process's end at one moment, read without reaping it (the
// Gunicorn master reaps its workers, not gwrap): whether it is there at all, whether a SIGKILL is
// on its way, whether it is exiting or a zombie, and the wait status its parent will reap.
type Fate struct {
	ID   ID  // StartTime as /proc shows it (0 when Gone)
	PPID int // its parent (0 when Gone)
	// Gone: no such process (it was reaped), or its pid now belongs to another process.
	Gone bool
	// State is stat's field 3 (R, S, D, Z…).
	State string
	// Exiting is PF_EXITING (stat field 9): it is inside exit, whatever made it exit.
	Exiting bool
	// KillPending: SIGKILL in SigPnd or ShdPnd. A SIGKILL sent to the process (the OOM killer's,
	// or kill(2)'s) stays in ShdPnd until the process is reaped, zombie included (measured on
	// Linux 6.18), so it is seen after the thread dequeued it too.
	KillPending bool
	// WaitStatus is stat field 52, exit_code (Linux ≥ 3.5): the wait status the parent will
	// reap — a signal number in the low 7 bits, or an exit code << 8. It is set as the process
	// starts to exit; StatusKnown is false when the kernel does not show it.
	WaitStatus  int
	StatusKnown bool
}

// Dying reports whether the process is gone or on its way out.
func (f Fate) Dying() bool {
	return f.Gone || f.KillPending || f.Exiting || f.State == "Z" || f.State == "X"
}

// Killed reports whether /proc shows it dying of SIGKILL: a SIGKILL pending, or a wait status
// that names SIGKILL.
func (f Fate) Killed() bool {
	return !f.Gone && (f.KillPending || f.ended() && f.WaitStatus&0x7f == 9)
}

// Explained reports whether /proc shows it dying of something other than SIGKILL: an exit code
// (0 included) or another signal, in the wait status of a process that is exiting or a zombie.
func (f Fate) Explained() bool {
	if f.Gone || f.KillPending || !f.ended() {
		return false
	}
	// An exiting process may not have its code set yet (exit_code is written a little after
	// PF_EXITING): only a zombie's status of 0 is an exit(0).
	return f.WaitStatus&0x7f != 9 && (f.WaitStatus != 0 || f.State == "Z")
}

// ended: the wait status is set (the process is exiting or a zombie, and the kernel shows it).
func (f Fate) ended() bool {
	return f.StatusKnown && (f.Exiting || f.State == "Z" || f.State == "X")
}

// Fate reads the fate of the process identified (/proc/<pid>/stat and status). A zero
// StartTime matches whatever process has the pid.
func (f FS) Fate(id ID) Fate {
	b, err := os.ReadFile(f.path(id.PID, "stat"))
	if err != nil {
		return Fate{ID: ID{PID: id.PID}, Gone: true}
	}
	st, _ := os.ReadFile(f.path(id.PID, "status")) // a vanished or unreadable status: no pending signal known
	fate, err := parseFate(id.PID, b, st)
	if err != nil || id.StartTime != 0 && fate.ID.StartTime != id.StartTime {
		return Fate{ID: ID{PID: id.PID}, Gone: true}
	}
	return fate
}

// Fates reads the fate of each of master's children: what the OOM watcher needs the moment the
// cgroup's oom_kill counter moved, while the victim is still a child (dying, or a zombie) and not
// yet reaped. A child that vanishes between the listing and the read is left out.
func (f FS) Fates(master int) ([]Fate, error) {
	if master <= 0 {
		return nil, fmt.Errorf("fates: %w", errNoMaster)
	}
	pids, err := f.ChildPIDs(master)
	if err != nil {
		return nil, err
	}
	out := make([]Fate, 0, len(pids))
	for _, pid := range pids {
		if fate := f.Fate(ID{PID: pid}); !fate.Gone {
			out = append(out, fate)
		}
	}
	return out, nil
}

var errNoMaster = errors.New("no Gunicorn master known")

// pfExiting is PF_EXITING in stat's flags (include/linux/sched.h).
const pfExiting = 0x4

// parseFate reads a process's fate from its /proc/<pid>/stat and status. comm may hold spaces and
// parentheses, so fields are counted after the last ')'.
func parseFate(pid int, stat, status []byte) (Fate, error) {
	f := Fate{ID: ID{PID: pid}}
	err := statFields(stat, 52, func(field int, tok []byte) {
		switch field {
		case 3:
			f.State = string(tok)
		case 4:
			f.PPID = int(atou(tok))
		case 9:
			f.Exiting = atou(tok)&pfExiting != 0
		case 22:
			f.ID.StartTime = atou(tok)
		case 52:
			f.WaitStatus, f.StatusKnown = int(atou(tok)), true
		}
	})
	if err != nil {
		return Fate{}, err
	}
	f.KillPending = killPending(status)
	return f, nil
}
