package main

import (
	"sync"
	"time"
)

// A slow disk never holds up the app. The report dir is often a network share (App Service's
// /home/LogFiles is SMB), where one write can take seconds, or hang. So nothing on the relay,
// signal, engine or stop paths writes there: the report store and the flight record each get a
// diskQueue, which runs their writes on a goroutine of its own, in the order they were handed
// over. It holds at most max jobs: a job that finds it full is dropped, and so is every job not
// done when the exit's deadline passes; both are counted (gwrap.exit) and said.

// diskJob is one piece of a writer's work.
type diskJob struct {
	at    time.Time    // when it was handed over (the flight record's lines are stamped so)
	items int          // what it writes, as counted when lost: reports, or flight-record lines
	final bool         // finish does not discard it (the flight record's closing line)
	run   func() error // an error means its items were not written (said by run itself)
}

// diskQueue runs one writer's jobs on its own goroutine.
type diskQueue struct {
	p    part
	ps   *parts
	full func(dropped int) // told, outside the lock, when a job is dropped because the queue is full

	mu      sync.Mutex
	jobs    chan diskJob
	closed  bool
	discard bool // finish was asked to drop what is not final
	pending int  // items handed over and not yet written or lost
	lost    int  // items dropped, failed, or abandoned at the deadline
	stamp   time.Time
	ended   chan struct{}
}

// newDiskQueue starts the goroutine; a panic in a job is said once (part p) and, unless
// restart, turns the part off: its later jobs are dropped.
func newDiskQueue(p part, ps *parts, max int, restart bool, full func(int)) *diskQueue {
	q := &diskQueue{p: p, ps: ps, full: full, jobs: make(chan diskJob, max), ended: make(chan struct{})}
	go q.loop(restart)
	return q
}

// push hands a job over; it never blocks. It reports false when the job was dropped (the queue
// is full or finished).
func (q *diskQueue) push(j diskJob) bool {
	if j.at.IsZero() {
		j.at = time.Now()
	}
	q.mu.Lock()
	if q.closed || len(q.jobs) == cap(q.jobs) {
		q.lost += j.items
		closed := q.closed
		q.mu.Unlock()
		if !closed && q.full != nil {
			q.full(j.items)
		}
		return false
	}
	q.pending += j.items
	q.jobs <- j // never blocks: there is room, and only this lock's holders send
	q.mu.Unlock()
	return true
}

// now is the hand-over time of the job running (the queue's goroutine only).
func (q *diskQueue) now() time.Time { return q.stamp }

func (q *diskQueue) loop(restart bool) {
	defer close(q.ended)
	for j := range q.jobs {
		q.mu.Lock()
		skip := q.discard && !j.final
		q.mu.Unlock()
		ok := false
		if !skip {
			q.stamp = j.at
			var err error
			do := func() { fault(q.p); err = j.run() }
			if restart {
				ok = q.ps.try(q.p, do) && err == nil
			} else {
				ok = q.ps.run(q.p, do) && err == nil
			}
		}
		q.mu.Lock()
		q.pending -= j.items
		if !ok {
			q.lost += j.items
		}
		q.mu.Unlock()
	}
}

// finish takes no more jobs, lets the queued ones run until deadline (dropping those that are
// not final when discard), and returns how many items were lost in all: dropped, failed, or
// still waiting (or being written) at the deadline. The goroutine may still be blocked in a
// write then: it is left to the exit.
func (q *diskQueue) finish(deadline time.Time, discard bool) int {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		q.discard = discard
		close(q.jobs)
	}
	q.mu.Unlock()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-q.ended:
	case <-timer.C:
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lost + q.pending
}
