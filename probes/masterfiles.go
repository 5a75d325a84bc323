package probes

import (
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/internal/pread"
)

// masterFiles keeps the master's stat and its main thread's children file open, so that listing
// the workers every sweep is three preads instead of a directory listing and, per file, open,
// fstat, read, read, close (and Go's poller registration): on an idle gwrap with 8 workers those
// were a fifth of its syscalls. A file kept open refers to its process, not to the pid: once the
// process is reaped, pread fails (ESRCH) and the files are opened afresh, so a reused pid is
// read as the new process.
type masterFiles struct {
	mu             sync.Mutex
	pid            int
	stat, children *os.File
	buf            []byte
}

func newMasterFiles() *masterFiles { return &masterFiles{buf: make([]byte, 1024)} }

// singleThreadChildren lists the children of a master that has one thread, from its main
// thread's children file (a child is listed under the thread that forked it, and a one-thread
// master forked them all). ok is false when the master has other threads or the files cannot be
// read: the caller then lists every thread's file.
func (f FS) singleThreadChildren(master int) (pids []int, ok bool) {
	m := f.master
	if m == nil {
		return nil, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pid != master {
		m.close()
		m.pid = master
	}
	if m.stat == nil {
		file, err := os.Open(f.path(master, "stat"))
		if err != nil {
			return nil, false
		}
		m.stat = file
	}
	b, err := pread.Whole(int(m.stat.Fd()), m.buf)
	if cap(b) > cap(m.buf) {
		m.buf = b[:cap(b)]
	}
	if err != nil {
		m.close() // gone, or a reused pid: opened afresh next time
		return nil, false
	}
	if s, err := parseStat(b); err != nil || s.threads != 1 {
		return nil, false
	}
	if m.children == nil {
		file, err := os.Open(f.path(master, "task", strconv.Itoa(master), "children"))
		if err != nil {
			return nil, false
		}
		m.children = file
	}
	// One record per child: read until 0 (a listing longer than the buffer comes in pieces).
	n := 0
	for {
		if n == len(m.buf) {
			m.buf = append(m.buf, make([]byte, len(m.buf))...)
		}
		k, err := unix.Pread(int(m.children.Fd()), m.buf[n:], int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			m.close()
			return nil, false
		}
		if k == 0 {
			break
		}
		n += k
	}
	for _, p := range strings.Fields(string(m.buf[:n])) {
		if pid, err := strconv.Atoi(p); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, true
}

func (m *masterFiles) close() {
	for _, f := range []*os.File{m.stat, m.children} {
		if f != nil {
			f.Close()
		}
	}
	m.stat, m.children = nil, nil
}
