package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/gwrap/gwrap/output"
	"github.com/gwrap/gwrap/postmortem"
)

// reportQueueMax bounds the post-mortems waiting for the report dir (tens of KiB each).
const reportQueueMax = 32

// reportQueue is the engine's Reporter: it hands each post-mortem to the store's diskQueue and
// returns at once with the path the report will have, so that the postmortem event comes when
// the death is decided, whatever the disk does. Its first job is the store's start-up check.
type reportQueue struct {
	store *postmortem.Store
	out   *output.Writer
	q     *diskQueue

	checked  chan struct{} // closed once the start-up check ran
	checkErr error         // its result, set before checked is closed
}

// newReportQueue starts the store's queue with its start-up check: a report dir that cannot be
// used is said once (config.warning, code report_dir), and post-mortems then only reach stdout.
func newReportQueue(store *postmortem.Store, out *output.Writer, ps *parts) *reportQueue {
	r := &reportQueue{store: store, out: out, checked: make(chan struct{})}
	// A full queue is said by the engine, to which Write returns the error.
	r.q = newDiskQueue(partStore, ps, reportQueueMax, true, nil)
	r.q.push(diskJob{run: func() error {
		defer close(r.checked)
		if err := store.Check(); err != nil {
			r.checkErr = err
			out.Warn("report_dir", err.Error()+"; post-mortems will not be written")
		}
		return nil
	}})
	return r
}

// Write queues a post-mortem and returns the path it will have. It fails only when the queue
// is full: the report is then lost (the engine says so; it is on stdout).
func (r *reportQueue) Write(rep postmortem.Report) (string, error) {
	ok := r.q.push(diskJob{items: 1, run: func() error {
		p, err := r.store.Write(rep)
		if err != nil {
			r.out.WarnOnce("report-write", "report_write", "cannot write post-mortem reports to "+r.store.Dir()+": "+err.Error()+" (they still appear on stdout)")
		}
		if p == "" {
			return err // not stored (a retention error alone leaves the report written)
		}
		return nil
	}})
	if !ok {
		return "", fmt.Errorf("the report dir %s is not keeping up: %d post-mortems wait to be written", r.store.Dir(), reportQueueMax)
	}
	return r.store.Path(rep.ID), nil
}

// check waits for the start-up check, at most until stop is closed (done false), and returns
// its error when it refused the dir (a symlink, not a directory: nothing is read or written there).
func (r *reportQueue) check(stop <-chan struct{}) (done bool, refused error) {
	select {
	case <-r.checked:
	case <-stop:
		return false, nil
	}
	if errors.Is(r.checkErr, postmortem.ErrRefused) {
		return true, r.checkErr
	}
	return true, nil
}

// finish waits for the queued post-mortems until deadline, and returns how many were not written.
func (r *reportQueue) finish(deadline time.Time) int { return r.q.finish(deadline, false) }
