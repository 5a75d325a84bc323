package output

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Output can fail, supervision cannot. Every line gwrap writes to stdout goes through a lineQueue:
// producers (the supervisor's loop, the relay, the samplers, the event loop) append a finished
// line and return at once; one writer goroutine writes the lines, in order, to stdout. A reader
// that stalls fills the queue and then lines are dropped (counted); a reader that is gone (EPIPE)
// or a full disk (ENOSPC) fails the writes (counted). Either is said once on stderr, and the
// count is in gwrap.exit. Nothing a producer does waits for stdout.
const (
	queueMaxLines = 16384    // lines waiting for the writer
	queueMaxBytes = 8 << 20  // bytes waiting for the writer (one longer line is taken when empty): within gwrap's 64 MiB
	batchBytes    = 64 << 10 // lines are written in batches of about this size
	keepBuf       = 1 << 20  // a batch buffer grown beyond this by a giant line is let go
)

type lineQueue struct {
	w      io.Writer
	notice func(string) // one line on stderr, never blocking the caller

	mu      sync.Mutex
	lines   [][]byte
	bytes   int
	force   bool // the last lines (gwrap.exit) are taken whatever the bounds
	closed  bool
	writing bool // the writer holds a batch
	wake    chan struct{}
	idle    *sync.Cond // signalled when the queue is empty and nothing is being written

	dropped   atomic.Uint64 // lines not queued: the writer fell behind
	failed    atomic.Uint64 // lines whose write failed
	dropOnce  sync.Once
	failOnce  sync.Once
	bigSince  int // bytes of giant lines written since memory was last given back (writer only)
	lastFreed time.Time
}

func newLineQueue(w io.Writer, notice func(string)) *lineQueue {
	q := &lineQueue{w: w, notice: notice, wake: make(chan struct{}, 1)}
	q.idle = sync.NewCond(&q.mu)
	go q.writer()
	return q
}

// Write queues one line (p is copied); it never blocks on the writer and never fails.
func (q *lineQueue) Write(p []byte) (int, error) {
	q.push(append([]byte(nil), p...))
	return len(p), nil
}

// push queues a line the caller gives away.
func (q *lineQueue) push(b []byte) {
	q.mu.Lock()
	full := q.full(len(b))
	if full && !q.force && !q.closed {
		// The writer may only be waiting for the CPU: on one P (gwrap's, and Go's in a container
		// limited to one CPU) the relay and the event loop hand lines to each other and would
		// run on without it. Let it run once; if the queue is still full, stdout has stalled.
		q.mu.Unlock()
		runtime.Gosched()
		q.mu.Lock()
		full = q.full(len(b))
	}
	if q.closed || (full && !q.force) {
		q.mu.Unlock()
		q.dropped.Add(1)
		q.dropOnce.Do(func() {
			q.notice(fmt.Sprintf("gwrap: stdout is not keeping up (more than %d lines or %d MiB waiting); lines are dropped and counted in gwrap.exit; supervision goes on",
				queueMaxLines, queueMaxBytes>>20))
		})
		return
	}
	q.lines = append(q.lines, b)
	q.bytes += len(b)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// full says whether a line of n bytes would exceed the queue's bounds (one longer line is taken
// when the queue is empty).
func (q *lineQueue) full(n int) bool {
	return len(q.lines) >= queueMaxLines || (len(q.lines) > 0 && q.bytes+n > queueMaxBytes)
}

// writer is the one goroutine that writes to stdout.
func (q *lineQueue) writer() {
	var buf []byte
	for {
		q.mu.Lock()
		for len(q.lines) == 0 {
			q.writing = false
			q.idle.Broadcast()
			if q.closed {
				q.mu.Unlock()
				return
			}
			q.mu.Unlock()
			q.waitGivingBack()
			q.mu.Lock()
		}
		q.writing = true
		n, size := 0, 0
		for n < len(q.lines) && (n == 0 || size+len(q.lines[n]) <= batchBytes) {
			size += len(q.lines[n])
			n++
		}
		batch := q.lines[:n:n]
		q.lines = q.lines[n:]
		if len(q.lines) == 0 {
			q.lines = nil // let the backing array go
		}
		q.bytes -= size
		q.mu.Unlock()

		for _, l := range batch {
			if len(l) > keepBuf {
				q.bigSince += len(l)
			}
		}
		out := batch[0] // one line (a giant one is alone): written as it is, not copied once more
		if n > 1 {
			buf = buf[:0]
			for _, l := range batch {
				buf = append(buf, l...)
			}
			out = buf
		}
		if _, err := q.w.Write(out); err != nil {
			q.failed.Add(uint64(n))
			q.failOnce.Do(func() { q.notice(writeFailure(err)) })
		}
		if cap(buf) > keepBuf {
			buf = nil
		}
	}
}

// quietBeforeFree is how long output must be quiet after giant lines before their memory is
// given back, and freeEvery how often at most (debug.FreeOSMemory is a full GC).
const (
	quietBeforeFree = time.Second
	freeEvery       = 5 * time.Second
)

// waitGivingBack waits for the next line; when giant lines were written and output stays quiet
// a while, it returns their memory to the system: without it, one 64 MiB line keeps gwrap's RSS
// up for minutes (the runtime scavenges slowly).
func (q *lineQueue) waitGivingBack() {
	if q.bigSince == 0 {
		<-q.wake
		return
	}
	wait := max(quietBeforeFree, freeEvery-time.Since(q.lastFreed))
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-q.wake:
	case <-timer.C:
		q.bigSince, q.lastFreed = 0, time.Now()
		debug.FreeOSMemory()
		<-q.wake
	}
}

func writeFailure(err error) string {
	why := err.Error()
	switch {
	case errors.Is(err, syscall.EPIPE):
		why = "its reader is gone (EPIPE)"
	case errors.Is(err, syscall.ENOSPC):
		why = "no space left (ENOSPC)"
	}
	return "gwrap: cannot write to stdout: " + why + "; gwrap goes on supervising, the lines that cannot be written are counted in gwrap.exit"
}

// lost is how many lines did not reach stdout so far.
func (q *lineQueue) lost() (dropped, failed uint64) { return q.dropped.Load(), q.failed.Load() }

// finish lets the last lines in (force), waits at most d for everything queued to be written,
// and closes the queue: what is still waiting then is counted as dropped.
func (q *lineQueue) finish(last func(), d time.Duration) {
	q.mu.Lock()
	q.force = true
	q.mu.Unlock()
	last()
	done := make(chan struct{})
	go func() {
		q.mu.Lock()
		for len(q.lines) > 0 || q.writing {
			q.idle.Wait()
		}
		q.mu.Unlock()
		close(done)
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
	}
	q.mu.Lock()
	q.closed = true
	q.dropped.Add(uint64(len(q.lines)))
	q.lines, q.bytes = nil, 0
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
