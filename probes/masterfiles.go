package probes

import (
	"io"
	"os"
	"sync"
)

// statCache keeps <proc>/<pid>/stat open for the master's children, so that listing them every
// sweep is one pread per child instead of open, fstat, read, read, close (and Go's poller
// registration): on an idle gwrap with 8 workers those were a fifth of its syscalls. A file
// kept open refers to its process, not to the pid: once the process is reaped, pread fails
// (ESRCH) and the pid is opened afresh, so a reused pid is read as the new process.
type statCache struct {
	mu   sync.Mutex
	open map[int]*os.File
	buf  [1024]byte
}

// childID is ID through the cache (the plain ID when the FS has none).
func (f FS) childID(pid int) (ID, error) {
	c := f.stats
	if c == nil {
		return f.ID(pid)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for attempt := 0; attempt < 2; attempt++ {
		file, ok := c.open[pid]
		if !ok {
			var err error
			if file, err = os.Open(f.path(pid, "stat")); err != nil {
				return ID{}, err
			}
			c.open[pid] = file
		}
		n, err := file.ReadAt(c.buf[:], 0)
		if err == nil || err == io.EOF {
			if s, err := parseStat(c.buf[:n]); err == nil {
				return ID{PID: pid, StartTime: s.starttime}, nil
			}
		}
		file.Close() // the process is gone (or the read failed): try the pid afresh
		delete(c.open, pid)
	}
	return f.ID(pid)
}

// keep closes the files of pids that are no longer children.
func (c *statCache) keep(ids []ID) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	live := make(map[int]bool, len(ids))
	for _, id := range ids {
		live[id.PID] = true
	}
	for pid, file := range c.open {
		if !live[pid] {
			file.Close()
			delete(c.open, pid)
		}
	}
}
