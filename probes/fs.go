package probes

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// FS reads processes under a /proc root. Copies share the master's open files.
type FS struct {
	root   string
	peers  unixPeers               // finds unix sockets' peers; nil: unix peers stay unnamed
	master *masterFiles            // nil: every listing reads the files afresh
	redact func([]string) []string // hides secrets in children's arguments (RedactArgs); nil: name only
}

// NewFS reads under procRoot (normally /proc). Unix sockets' peers are found through the
// kernel's sock_diag netlink interface of gwrap's network namespace.
func NewFS(procRoot string) FS {
	return FS{root: procRoot, peers: defaultUnixPeers(), master: newMasterFiles()}
}

func (f FS) path(pid int, name ...string) string {
	return filepath.Join(append([]string{f.root, strconv.Itoa(pid)}, name...)...)
}

// gone reports whether an error means the process has vanished (normal, not a failure).
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH)
}

// Children lists the master's children (see ChildPIDs) with their start times.
func (f FS) Children(master int) ([]ID, error) {
	pids, ids, err := f.childPIDs(master)
	if err != nil || ids != nil {
		return ids, err
	}
	out := make([]ID, 0, len(pids))
	for _, pid := range pids {
		if id, err := f.ID(pid); err == nil {
			out = append(out, id)
		}
	}
	return out, nil
}

// ChildPIDs lists the master's children: for a one-thread master (Gunicorn's arbiter) from its
// main thread's children file, kept open; else from <proc>/<pid>/task/*/children (every thread:
// a child is listed under the thread that forked it). When those files cannot be read (a kernel
// without CONFIG_PROC_CHILDREN, another uid), it falls back to scanning the ppid of every
// <proc>/*/stat.
func (f FS) ChildPIDs(master int) ([]int, error) {
	pids, ids, err := f.childPIDs(master)
	for _, id := range ids {
		pids = append(pids, id.PID)
	}
	return pids, err
}

// childPIDs is ChildPIDs, with the IDs instead when the slow path read them anyway.
func (f FS) childPIDs(master int) ([]int, []ID, error) {
	if pids, ok := f.singleThreadChildren(master); ok {
		return pids, nil, nil
	}
	tasks, err := os.ReadDir(f.path(master, "task"))
	if err != nil {
		if gone(err) {
			return nil, nil, fmt.Errorf("master %d: %w", master, err)
		}
		ids, err := f.childrenByPPID(master)
		return nil, ids, err
	}
	var pids []int
	read := 0
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(f.path(master, "task"), t.Name(), "children"))
		if err != nil {
			continue
		}
		read++
		for _, p := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(p); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	if read == 0 && len(tasks) > 0 {
		ids, err := f.childrenByPPID(master)
		return nil, ids, err
	}
	return pids, nil, nil
}

// childrenByPPID lists the processes whose stat names master as parent (one read per process
// on the host: the slow path).
func (f FS) childrenByPPID(master int) ([]ID, error) {
	ents, err := os.ReadDir(f.root)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", f.root, err)
	}
	var out []ID
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == master {
			continue
		}
		b, err := os.ReadFile(f.path(pid, "stat"))
		if err != nil {
			continue // vanished, or not a process
		}
		if s, err := parseStat(b); err == nil && s.ppid == master {
			out = append(out, ID{PID: pid, StartTime: s.starttime})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out, nil
}

// ID reads a process's identity (pid, start time) from <proc>/<pid>/stat.
func (f FS) ID(pid int) (ID, error) {
	b, err := os.ReadFile(f.path(pid, "stat"))
	if err != nil {
		return ID{}, err
	}
	s, err := parseStat(b)
	if err != nil {
		return ID{}, err
	}
	return ID{PID: pid, StartTime: s.starttime}, nil
}

// Alive reports whether the process is still the one identified and not a zombie.
func (f FS) Alive(id ID) bool {
	b, err := os.ReadFile(f.path(id.PID, "stat"))
	if err != nil {
		return false
	}
	s, err := parseStat(b)
	return err == nil && s.starttime == id.StartTime && s.state != "Z" && s.state != "X"
}

// heartbeatFD finds the fd of the worker's Gunicorn heartbeat file (wgunicorn-*, unlinked).
func (f FS) heartbeatFD(pid int) (int, error) {
	fds, err := f.heartbeatFDs(pid)
	if err != nil {
		return -1, err
	}
	if len(fds) == 0 {
		return -1, fmt.Errorf("%s: no wgunicorn- file: %w", f.path(pid, "fd"), fs.ErrNotExist)
	}
	return fds[0], nil
}

// heartbeatFDs lists the fds of pid that are Gunicorn heartbeat files, ascending. A worker holds
// one (its own); the master holds one per live worker, at the same fd number as in that worker.
func (f FS) heartbeatFDs(pid int) ([]int, error) {
	dir := f.path(pid, "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if strings.HasPrefix(filepath.Base(target), "wgunicorn-") {
			if n, err := strconv.Atoi(e.Name()); err == nil {
				out = append(out, n)
			}
		}
	}
	sort.Ints(out)
	return out, nil
}

// heartbeat reads the heartbeat file's age and whether the worker ever beat.
//
// Gunicorn ≤ 21.x beats with fchmod (the mode toggles between 0 and 1; st_ctime is the wall-clock
// time of the last beat; mkstemp's 0600 means never beaten). ≥ 22.0 beats with utime(fd,
// (m, m)) where m is CLOCK_MONOTONIC seconds: st_mtime far below any wall-clock date means it
// beat, and its age is monotonic now − mtime (immune to clock steps). Both move st_ctime.
func (f FS) heartbeat(pid, fd int, now time.Time) (time.Duration, bool, error) {
	return heartbeatAt(f.path(pid, "fd", strconv.Itoa(fd)), now)
}

// heartbeatAt is heartbeat for the path of the fd link, <proc>/<pid>/fd/<n>.
func heartbeatAt(path string, now time.Time) (time.Duration, bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return -1, false, fmt.Errorf("heartbeat %s: %w", path, err)
	}
	return heartbeatAge(st, now, monotonicNow())
}

// openPath opens the file at path (following links, /proc's fd links included) for fstat only:
// O_PATH needs no permission on the file itself, which a heartbeat of mode 000 denies.
func openPath(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	for err == unix.EINTR {
		fd, err = unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return -1, fmt.Errorf("heartbeat %s: %w", path, err)
	}
	return fd, nil
}

// heartbeatOf is heartbeat for gwrap's own descriptor of the heartbeat file (openPath).
func heartbeatOf(fd int, now time.Time) (time.Duration, bool, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return -1, false, fmt.Errorf("heartbeat: %w", err)
	}
	return heartbeatAge(st, now, monotonicNow())
}

// monoBefore: an mtime earlier than this (2001-09-09) cannot be a wall-clock creation time.
const monoBefore = 1_000_000_000

func heartbeatAge(st unix.Stat_t, now time.Time, mono time.Duration) (time.Duration, bool, error) {
	if st.Mtim.Sec < monoBefore {
		m := time.Duration(st.Mtim.Sec)*time.Second + time.Duration(st.Mtim.Nsec)
		return max(0, mono-m), true, nil
	}
	ctime := time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	beaten := st.Mode&0o777 != 0o600
	return max(0, now.Sub(ctime)), beaten, nil
}

// monotonicNow is CLOCK_MONOTONIC, the clock of Gunicorn ≥ 22's heartbeat: read once, then
// advanced by Go's monotonic clock, which is CLOCK_MONOTONIC too and is read without a syscall
// (unix.ClockGettime is one: eight a second on an idle gwrap).
func monotonicNow() time.Duration {
	base, at := monoBase()
	return base + time.Since(at)
}

var monoBase = sync.OnceValues(func() (time.Duration, time.Time) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, time.Now()
	}
	return time.Duration(ts.Sec)*time.Second + time.Duration(ts.Nsec), time.Now()
})
