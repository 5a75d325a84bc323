package probes

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/internal/pread"
)

// userHZ is the kernel's USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100 on every
// Linux architecture gwrap runs on (it is part of the ABI, independent of CONFIG_HZ).
const userHZ = 100

// worker is one process being sampled. It keeps /proc/<pid>/{stat,status,schedstat} open and
// re-reads them with pread at offset 0 (the kernel regenerates them on each read): ~4 µs a file,
// no allocation. Once the process is reaped, the reads fail with ESRCH.
type worker struct {
	fs                  FS
	id                  ID
	stat, status, sched *os.File
	buf                 []byte

	hbPID    int    // whose fd table holds the heartbeat: the worker, or the master as a fallback
	hbFD     int    // heartbeat fd number in hbPID, -1 unknown
	hb       int    // gwrap's own O_PATH fd of the heartbeat file, -1 not open
	hbTried  bool   // looked for it in the worker's own fd table
	fdDenied bool   // the worker's fd table is unreadable (another uid): ask the master's
	own      fileID // the heartbeat file it owns, when told apart from its siblings' (dirty.go)

	prevTime          time.Time
	prevUser, prevSys uint64 // utime, stime at prevTime
	prevWait          uint64 // schedstat wait_ns at prevTime
	havePrev          bool
}

// openWorker opens the files of the process pid is now and reads its identity from them.
func openWorker(fs FS, pid int) (*worker, error) {
	w := &worker{fs: fs, id: ID{PID: pid}, buf: make([]byte, 4096), hbFD: -1, hb: -1}
	var err error
	if w.stat, err = os.Open(fs.path(pid, "stat")); err != nil {
		return nil, err
	}
	b, err := w.pread(w.stat)
	if err == nil {
		var st stat
		if st, err = parseStat(b); err == nil {
			w.id.StartTime = st.starttime
		}
	}
	if err != nil {
		w.stat.Close()
		return nil, err
	}
	w.status, _ = os.Open(fs.path(pid, "status"))
	w.sched, _ = os.Open(fs.path(pid, "schedstat"))
	return w, nil
}

func (w *worker) close() {
	for _, f := range []*os.File{w.stat, w.status, w.sched} {
		if f != nil {
			f.Close()
		}
	}
	if w.hb >= 0 {
		unix.Close(w.hb)
		w.hb = -1
	}
}

// pread reads a whole pseudo-file from offset 0 into the worker's buffer (kept when it grew).
func (w *worker) pread(f *os.File) ([]byte, error) {
	b, err := pread.Whole(int(f.Fd()), w.buf)
	if cap(b) > cap(w.buf) {
		w.buf = b[:cap(b)]
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

// errGone says the worker has vanished (or its pid now belongs to another process).
var errGone = fmt.Errorf("worker gone")

// sample takes a hot sample. It fails only when the worker is gone; any other unreadable field
// is named in Sample.Missing.
func (w *worker) sample(now time.Time) (Sample, error) {
	s := Sample{Time: now, HeartbeatAge: -1}
	b, err := w.pread(w.stat)
	if err != nil {
		return s, errGone
	}
	st, err := parseStat(b)
	if err != nil || st.starttime != w.id.StartTime {
		return s, errGone
	}
	s.State, s.Threads, s.MajorFaults = st.state, st.threads, st.majflt
	if w.status != nil {
		if b, err := w.pread(w.status); err == nil {
			ps := parseStatus(b)
			s.RSSAnon, s.RSSFile, s.RSSShmem, s.Swap = ps.rssAnon, ps.rssFile, ps.rssShmem, ps.swap
			s.VoluntaryCtxt, s.InvoluntaryCtxt = ps.volCtxt, ps.involCtxt
			s.KillPending = ps.killPending
		} else {
			s.Missing = append(s.Missing, "status")
		}
	} else {
		s.Missing = append(s.Missing, "status")
	}
	var wait uint64
	haveWait := false
	if w.sched != nil {
		if b, err := w.pread(w.sched); err == nil {
			if wait, err = parseSchedstat(b); err == nil {
				haveWait = true
				s.RunDelay = time.Duration(wait)
			}
		}
	}
	if !haveWait {
		s.Missing = append(s.Missing, "schedstat")
	}
	s.NoRates = !w.havePrev
	if w.havePrev {
		if dt := now.Sub(w.prevTime).Seconds(); dt > 0 {
			user := float64(st.utime) - float64(w.prevUser)
			sys := float64(st.stime) - float64(w.prevSys)
			s.CPUUser = max(0, user/userHZ/dt*100)
			s.CPUSystem = max(0, sys/userHZ/dt*100)
			if haveWait && wait >= w.prevWait {
				s.RunDelayPct = float64(wait-w.prevWait) / 1e9 / dt * 100
			}
		}
	}
	// Heartbeat.
	w.findHeartbeat()
	if w.hbFD >= 0 {
		if w.hb < 0 {
			// The file itself, opened once through the fd link: every later read is one
			// fstat, not a path walk through /proc. Worker and file end together.
			w.hb, _ = openPath(w.fs.path(w.hbPID, "fd", strconv.Itoa(w.hbFD)))
		}
		if w.hb >= 0 {
			if age, beaten, err := heartbeatOf(w.hb, now); err == nil {
				s.HeartbeatAge, s.Heartbeats = age, beaten
			}
		}
		// A failure here is a worker closing its fds on the way out: not worth a warning.
	} else {
		s.Missing = append(s.Missing, "heartbeat")
	}
	w.prevTime, w.prevUser, w.prevSys, w.prevWait, w.havePrev = now, st.utime, st.stime, wait, true
	return s, nil
}

// findHeartbeat looks once for the heartbeat file in the worker's own fd table, noting when
// the table is unreadable so the watcher can look in the master's instead.
func (w *worker) findHeartbeat() {
	if w.hbFD >= 0 || w.hbTried {
		return
	}
	w.hbTried = true
	fds, err := w.fs.heartbeatFDs(w.id.PID)
	switch {
	case err == nil && len(fds) > 0:
		w.hbPID, w.hbFD = w.id.PID, fds[0]
	case err != nil && !gone(err):
		w.fdDenied = true // EACCES for a worker of another uid
	}
}

// Private reads a process's private memory (USS: Private_Clean + Private_Dirty of
// /proc/<pid>/smaps_rollup), and then checks that pid is still the process id names (the pid may
// have been reused while it was read). Reading it makes the kernel walk the process's page
// tables: ~0.6 ms at 60 MiB resident, 22 ms at 2 GiB.
func (f FS) Private(id ID) (uint64, error) {
	b, err := os.ReadFile(f.path(id.PID, "smaps_rollup"))
	if err != nil {
		return 0, err
	}
	if cur, err := f.ID(id.PID); err != nil || cur.StartTime != id.StartTime {
		return 0, errGone
	}
	r := parseSmapsRollup(b)
	if !r.known {
		return 0, fmt.Errorf("smaps_rollup: %w", errFormat)
	}
	return r.uss, nil
}

// Deep takes the expensive sample of one process: PSS and USS, wait channel, current syscall,
// its child processes with their command lines, sockets (TCP, UDP, unix) with their peers (from
// the process's own network namespace), open files.
func (f FS) Deep(pid int, now time.Time) (Deep, error) {
	d := Deep{Time: now}
	if _, err := os.Stat(f.path(pid)); err != nil {
		return d, err
	}
	if b, err := os.ReadFile(f.path(pid, "smaps_rollup")); err == nil {
		r := parseSmapsRollup(b)
		d.PSS, d.USS = r.pss, r.uss
	} else {
		d.Missing = append(d.Missing, "smaps_rollup")
	}
	if b, err := os.ReadFile(f.path(pid, "wchan")); err == nil {
		d.Wchan = strings.TrimSpace(string(b))
	} else {
		d.Missing = append(d.Missing, "wchan")
	}
	if b, err := os.ReadFile(f.path(pid, "syscall")); err == nil {
		d.Syscall = parseSyscall(b)
	} else {
		d.Missing = append(d.Missing, "syscall")
	}
	if kids, err := f.children(pid); err == nil {
		d.Children = kids
	} else if !gone(err) {
		d.Missing = append(d.Missing, "children")
	}
	inodes := map[uint64]bool{}
	ents, err := os.ReadDir(f.path(pid, "fd"))
	if err != nil {
		d.Missing = append(d.Missing, "fd")
		return d, nil
	}
	d.OpenFiles = len(ents)
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(f.path(pid, "fd"), e.Name()))
		if err != nil {
			continue
		}
		if in, ok := strings.CutPrefix(target, "socket:["); ok {
			if n, err := strconv.ParseUint(strings.TrimSuffix(in, "]"), 10, 64); err == nil {
				inodes[n] = true
			}
		}
	}
	if len(inodes) == 0 {
		return d, nil
	}
	for _, p := range []string{"tcp", "tcp6", "udp", "udp6"} {
		if b, err := os.ReadFile(f.path(pid, "net", p)); err == nil {
			d.Sockets = append(d.Sockets, sockets(parseNetTCP(b), p, inodes)...)
		}
	}
	if b, err := os.ReadFile(f.path(pid, "net", "unix")); err == nil {
		first := len(d.Sockets)
		d.Sockets = append(d.Sockets, parseNetUnix(b, inodes)...)
		if want := connectedUnix(d.Sockets[first:]); want != nil && f.peers != nil {
			if peers, err := f.peers.Peers(want); err == nil {
				resolveUnixPeers(d.Sockets[first:], peers, unixPaths(b))
			} else {
				d.Missing = append(d.Missing, "unix peers ("+err.Error()+")")
			}
		}
	}
	return d, nil
}
