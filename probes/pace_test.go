package probes

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestSweepPace: a sweep comes once per Interval unless memory climbs (Options.Fast: then every
// sweep is full and they come every FastInterval) or a notification asks for one (Wake).
func TestSweepPace(t *testing.T) {
	gunicorn := []string{"/usr/bin/python3", "/usr/bin/gunicorn", "app:app"}
	root := writeProc(t, []fakeProc{
		{pid: 10, ppid: 1, cmdline: gunicorn, fds: []string{heartbeat("a")}},
		{pid: 11, ppid: 10, cmdline: gunicorn, fds: []string{heartbeat("a")}},
	})
	var fast atomic.Bool
	sweeps := make(chan time.Time, 1000)
	w := NewWatcher(NewFS(root), Options{Interval: time.Hour, FastInterval: 20 * time.Millisecond, Limits: Limits{Timeout: 30 * time.Second},
		Sweep: func(now time.Time, sample func()) { sample(); sweeps <- now },
		Fast:  func(time.Time) bool { return fast.Load() }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, 10, func(Event) {}) }()
	t.Cleanup(func() { cancel(); <-done })

	next := func(what string) time.Time {
		t.Helper()
		select {
		case at := <-sweeps:
			return at
		case <-time.After(5 * time.Second):
			t.Fatalf("no sweep: %s", what)
		}
		return time.Time{}
	}
	none := func(what string) {
		t.Helper()
		select {
		case <-sweeps:
			t.Fatalf("a sweep %s", what)
		case <-time.After(200 * time.Millisecond):
		}
	}
	next("the first")
	none("before the hour's interval, with nothing climbing")

	w.Wake()
	next("after Wake")
	none("after the woken one")

	fast.Store(true)
	w.Wake()
	first := next("after Wake, climbing")
	var last time.Time
	for i := 0; i < 5; i++ {
		last = next("while memory climbs")
	}
	if gap := last.Sub(first) / 5; gap < 15*time.Millisecond || gap > 500*time.Millisecond {
		t.Errorf("sweeps %v apart while climbing, want about the 20 ms FastInterval", gap)
	}
	fast.Store(false)
	for {
		select {
		case <-sweeps:
			continue
		case <-time.After(200 * time.Millisecond):
		}
		break
	}
	none("once memory stopped climbing")
}

// TestPrivateOnDemand: a worker's private memory is read from smaps_rollup only when
// Options.Private asks for it, at most once per Interval, and its sample says it was read.
func TestPrivateOnDemand(t *testing.T) {
	gunicorn := []string{"/usr/bin/python3", "/usr/bin/gunicorn", "app:app"}
	root := writeProc(t, []fakeProc{
		{pid: 10, ppid: 1, cmdline: gunicorn, fds: []string{heartbeat("a")}},
		{pid: 11, ppid: 10, cmdline: gunicorn, fds: []string{heartbeat("a")}},
		{pid: 12, ppid: 10, cmdline: gunicorn, fds: []string{heartbeat("a")}},
	})
	rollup := "55d0-7ffd ---p 00000000 00:00 0    [rollup]\nRss:  16000 kB\nPss:  13021 kB\nPrivate_Clean:  100 kB\nPrivate_Dirty:  3336 kB\n"
	for _, pid := range []string{"11", "12"} {
		if err := os.WriteFile(filepath.Join(root, pid, "smaps_rollup"), []byte(rollup), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w := NewWatcher(NewFS(root), Options{Interval: time.Second, FastInterval: 100 * time.Millisecond, Limits: Limits{Timeout: 30 * time.Second},
		Private: func(Sample) bool { return true }})
	workers := map[int]*tracked{}
	t.Cleanup(func() {
		for _, tr := range workers {
			tr.w.close()
		}
	})
	var samples []Sample
	emit := func(e Event) {
		if e.Kind == EventSample {
			samples = append(samples, e.Sample)
		}
	}
	t0 := time.Now()
	w.discover(10, workers, t0, emit)
	if len(samples) != 2 {
		t.Fatalf("%d samples, want 2", len(samples))
	}
	for _, s := range samples {
		if !s.PrivateKnown || s.Private != 3436*1024 {
			t.Errorf("sample private %d known %v, want 3436 KiB", s.Private, s.PrivateKnown)
		}
	}
	samples = nil
	w.discover(10, workers, t0.Add(300*time.Millisecond), emit) // a fast sweep within the interval
	for _, s := range samples {
		if s.PrivateKnown {
			t.Errorf("private memory read again within the interval: %+v", s)
		}
	}
	samples = nil
	w.opt.Private = func(Sample) bool { return false }
	w.discover(10, workers, t0.Add(2*time.Second), emit)
	for _, s := range samples {
		if s.PrivateKnown {
			t.Errorf("private memory read though not asked for: %+v", s)
		}
	}
}
