package probes

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Finding the Gunicorn master. A master is recognised by what it is and does, never by its
// command line alone: Gunicorn is launched as `gunicorn`, `python -m gunicorn`, `python3 -c
// "…run()"`, a custom application (`python3 server.py` running a BaseApplication), behind a
// shell, a privilege drop or an APM wrapper, and none of those needs to look like `gunicorn`.
// What every master does (Gunicorn's arbiter.py, spawn_worker, and workertmp.py): it creates each worker's heartbeat file
// (wgunicorn-*, unlinked) before the fork and keeps its descriptor, so it holds one heartbeat
// file per live worker and each worker holds its own; it holds the listening sockets; and it
// writes Gunicorn's start lines with its own pid. The lines are only a hint (the app shares
// stderr): /proc must confirm.

// Evidence says how a master was recognised, strongest first.
type Evidence string

// How a master can be recognised.
const (
	// ByHeartbeats: it holds a heartbeat file that one of its children holds too (or its
	// children's open files are closed to gwrap, and it holds heartbeat files).
	ByHeartbeats Evidence = "heartbeats"
	// ByListener: it holds a listening socket, and its command line says it is Gunicorn (a master
	// that has not forked its first worker yet).
	ByListener Evidence = "listener"
	// ByHint: its open files are closed to gwrap (another uid, no CAP_SYS_PTRACE), and its
	// command line or a start line with its pid says it is Gunicorn. The weakest.
	ByHint Evidence = "hint"
)

func (e Evidence) rank() int {
	switch e {
	case ByHeartbeats:
		return 0
	case ByListener:
		return 1
	}
	return 2
}

// Master is a Gunicorn master and how it was recognised.
type Master struct {
	PID int
	By  Evidence
}

// masterDepth bounds how far below the supervised command the master is looked for (`sh -c
// 'gunicorn …'`, an entrypoint script that does not exec, a wrapper that forks), and
// maxVisited how many processes one search reads (a command with hundreds of children is not
// searched whole every sweep).
const (
	masterDepth = 4
	maxVisited  = 64
)

// FindMaster returns the Gunicorn master at or below root: the shallowest process that a master's
// evidence confirms (the strongest evidence wins among processes at one depth). hinted tells
// whether one of Gunicorn's start lines named a pid (nil: none did). ok is false while there is
// none: a shell still running a migration before `exec gunicorn`, a command that is not
// Gunicorn at all. Their children are not workers.
func (f FS) FindMaster(root int, hinted func(pid int) bool) (Master, bool) {
	if hinted == nil {
		hinted = func(int) bool { return false }
	}
	level := []int{root}
	visited := 0
	for depth := 0; depth <= masterDepth && len(level) > 0; depth++ {
		var best Master
		var next []int
		for _, p := range level {
			if visited++; visited > maxVisited {
				break
			}
			kids := f.childrenOf(p)
			sort.Ints(kids)
			if m, ok := f.judge(p, kids, hinted); ok && (best.PID == 0 || m.By.rank() < best.By.rank()) {
				best = m
			}
			next = append(next, kids...)
		}
		if best.PID != 0 {
			return best, true
		}
		level = next
	}
	return Master{}, false
}

// judge says whether p, whose children are kids, is a Gunicorn master.
func (f FS) judge(p int, kids []int, hinted func(int) bool) (Master, bool) {
	t, err := f.fdTable(p)
	if err != nil {
		if !gone(err) && (f.gunicornCmdline(p) || hinted(p)) {
			return Master{PID: p, By: ByHint}, true
		}
		return Master{}, false
	}
	if len(t.heartbeats) > 0 {
		for _, k := range kids {
			kt, err := f.fdTable(k)
			switch {
			case err == nil && shared(kt.heartbeats, t.heartbeats) > 0:
				return Master{PID: p, By: ByHeartbeats}, true
			case err != nil && !gone(err):
				// A worker of another uid: its open files are closed to gwrap; its parent's
				// heartbeat files say enough.
				return Master{PID: p, By: ByHeartbeats}, true
			}
		}
	}
	// Before its first worker: a listener and a Gunicorn command line. A start line naming the
	// pid is not enough here: the app (a migration before `exec gunicorn`) can print one, and
	// listen too; a custom application is found at its first worker instead.
	if len(t.sockets) > 0 && f.gunicornCmdline(p) && f.listens(p, t.sockets) {
		return Master{PID: p, By: ByListener}, true
	}
	return Master{}, false
}

// newMasterOf reports whether pid, a child of master, is a new master a USR2 binary upgrade
// started: Gunicorn re-executes itself with GUNICORN_PID=<the old master's pid> in the new
// master's environment (arbiter.py reexec), which no worker or dirty arbiter (forked without an
// exec) has — their environment is the one the master was started with. False when the
// environment cannot be read (another uid): the child stays a worker, as before.
func (f FS) newMasterOf(master, pid int) bool {
	b, _, err := readBounded(f.path(pid, "environ"), maxEnviron)
	return err == nil && strings.Contains("\x00"+string(b), "\x00GUNICORN_PID="+strconv.Itoa(master)+"\x00")
}

// maxEnviron bounds what is read of a process's environment (the kernel allows 2 MiB).
const maxEnviron = 256 << 10

// fdTable is what discovery reads of a process's open files.
type fdTable struct {
	heartbeats []string        // link targets of Gunicorn heartbeat files: "/tmp/wgunicorn-ab12cd34 (deleted)"
	sockets    map[uint64]bool // socket inodes
}

// maxFDs bounds how many descriptors of one process discovery reads: a master holds a few per
// worker; a process with thousands of open files is not read whole every sweep.
const maxFDs = 4096

// fdTable reads <proc>/<pid>/fd: the heartbeat files and sockets among its links.
func (f FS) fdTable(pid int) (fdTable, error) {
	dir := f.path(pid, "fd")
	d, err := os.Open(dir)
	if err != nil {
		return fdTable{}, err
	}
	defer d.Close()
	names, err := d.Readdirnames(maxFDs)
	if err != nil && len(names) == 0 {
		if errors.Is(err, io.EOF) {
			return fdTable{}, nil
		}
		return fdTable{}, err
	}
	targets := make([]string, 0, len(names))
	for _, n := range names {
		t, err := os.Readlink(filepath.Join(dir, n))
		if err != nil {
			if errors.Is(err, fs.ErrPermission) {
				// The directory lists, but its links need ptrace access (another uid, and
				// no CAP_SYS_PTRACE): the table is closed to gwrap.
				return fdTable{}, fmt.Errorf("%s: %w", dir, err)
			}
			continue // closed meanwhile
		}
		targets = append(targets, t)
	}
	return parseFDTargets(targets), nil
}

// parseFDTargets sorts fd link targets into heartbeat files and socket inodes (pure).
func parseFDTargets(targets []string) fdTable {
	var t fdTable
	for _, s := range targets {
		if n, ok := parseSocketLink(s); ok {
			if t.sockets == nil {
				t.sockets = map[uint64]bool{}
			}
			t.sockets[n] = true
			continue
		}
		if strings.HasPrefix(filepath.Base(strings.TrimSuffix(s, " (deleted)")), "wgunicorn-") {
			t.heartbeats = append(t.heartbeats, s)
		}
	}
	sort.Strings(t.heartbeats)
	return t
}

// shared counts the files of a that b holds too (both sorted).
func shared(a, b []string) int {
	n := 0
	for _, s := range a {
		if i := sort.SearchStrings(b, s); i < len(b) && b[i] == s {
			n++
		}
	}
	return n
}

// listens reports whether one of the socket inodes is a listening TCP or unix socket: TCP from
// sock_diag (tens of µs), else <proc>/<pid>/net/tcp{,6} (milliseconds); unix from
// <proc>/<pid>/net/unix.
func (f FS) listens(pid int, inodes map[uint64]bool) bool {
	rows, err := tcpSockets(1 << tcpStateListen)
	if err != nil || !hasListener(rows, inodes) {
		rows, _ = f.procTCP(pid)
	}
	if hasListener(rows, inodes) {
		return true
	}
	if b, err := os.ReadFile(f.path(pid, "net", "unix")); err == nil {
		for _, s := range parseNetUnix(b, inodes) {
			if s.State == "LISTEN" {
				return true
			}
		}
	}
	return false
}

// gunicornCmdline reports whether <proc>/<pid>/cmdline looks like Gunicorn's (a hint only).
func (f FS) gunicornCmdline(pid int) bool {
	b, err := os.ReadFile(f.path(pid, "cmdline"))
	return err == nil && IsGunicornCmdline(b)
}

// hints are the pids Gunicorn's start lines named ("[PID] … Starting gunicorn", "Listening at: …
// (PID)"): the last few, safe from any goroutine.
type hints struct {
	mu   sync.Mutex
	pids []int
}

const maxHints = 8

func (h *hints) add(pid int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.pids {
		if p == pid {
			return
		}
	}
	if len(h.pids) == maxHints {
		h.pids = append(h.pids[:0], h.pids[1:]...)
	}
	h.pids = append(h.pids, pid)
}

func (h *hints) has(pid int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.pids {
		if p == pid {
			return true
		}
	}
	return false
}
