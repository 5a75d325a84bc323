package main

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
	"github.com/gwrap/gwrap/recycle"
)

// recyclePolicy is the recycling the flags ask for (the zero Policy when neither is set), with
// Gunicorn's graceful timeout as the time a recycled worker gets to finish.
func recyclePolicy(cfg config, s gunicorn.Settings) recycle.Policy {
	p := recycle.Policy{At: cfg.RecycleAt / 100, WorkerBytes: uint64(cfg.RecycleWorkerMemory),
		MinAge: recycle.DefaultMinAge, Interval: recycle.DefaultInterval}
	if s.GracefulTimeout > 0 {
		p.Graceful = time.Duration(s.GracefulTimeout) * time.Second
	}
	return p
}

// wantPrivate says, for the watcher (Options.Private), whether a worker's private memory is
// worth reading with its sample: when recycling is on and either its resident memory reaches
// --recycle-worker-memory (its private memory is a part of it) or the container's working set
// is within 10 points of --recycle-at (the recycler will soon pick the largest worker). last is
// the container's latest sample, read on the watcher's goroutine, which takes it.
func wantPrivate(p recycle.Policy, last *memwatch.Stats) func(probes.Sample) bool {
	if !p.On() {
		return nil
	}
	return func(s probes.Sample) bool {
		if p.WorkerBytes > 0 && s.RSS() >= p.WorkerBytes {
			return true
		}
		return p.At > 0 && last.NearLimit(max(p.At-0.1, 0.01))
	}
}

var errNotWorker = errors.New("not that worker any more")

// terminateWorker sends SIGTERM to the worker id, and only to it: through a pidfd opened first,
// so that the checks made after it (the same start time, a child of master, not already exiting)
// hold for the process the signal reaches. gwrap is root: a pid reused by another process must
// never be signalled.
func terminateWorker(proc probes.FS, id probes.ID, master int) error {
	if id.PID <= 0 || id.StartTime == 0 || master <= 0 {
		return fmt.Errorf("worker %d: %w (identity unknown)", id.PID, errNotWorker)
	}
	fd, err := unix.PidfdOpen(id.PID, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", id.PID, err)
	}
	defer unix.Close(fd)
	fate := proc.Fate(id)
	switch {
	case fate.Gone || fate.ID.StartTime != id.StartTime:
		return fmt.Errorf("worker %d: %w (gone, or its pid reused)", id.PID, errNotWorker)
	case fate.PPID != master:
		return fmt.Errorf("worker %d: %w (its parent is %d, not the master %d)", id.PID, errNotWorker, fate.PPID, master)
	case fate.Dying():
		return fmt.Errorf("worker %d: %w (already exiting)", id.PID, errNotWorker)
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0); err != nil {
		return fmt.Errorf("SIGTERM to worker %d: %w", id.PID, err)
	}
	return nil
}
