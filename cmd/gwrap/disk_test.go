package main

import (
	"bytes"
	"errors"
	"github.com/gwrap/gwrap/output"
	"io"
	"strings"
	"testing"
	"time"
)

// hang pushes a job that blocks until release is closed (a write to a stalled disk) and waits
// until the queue's goroutine is in it.
func hang(q *diskQueue, items int, release chan struct{}) {
	started := make(chan struct{})
	q.push(diskJob{items: items, run: func() error { close(started); <-release; return nil }})
	<-started
}

// TestDiskQueue: jobs run in order on the queue's goroutine; a hung job holds up nobody who
// pushes; a full queue drops (and counts) what does not fit; finish waits until the deadline
// and counts every item not written; with discard only the final job is still done.
func TestDiskQueue(t *testing.T) {
	var buf bytes.Buffer
	ps := newParts(output.NewWriter(&buf, io.Discard, "json", time.Now))

	t.Run("full", func(t *testing.T) {
		full := 0
		q := newDiskQueue(partFlight, ps, 4, false, func(n int) { full += n })
		release := make(chan struct{})
		hang(q, 1, release)
		var order []int
		start := time.Now()
		for i := 1; i <= 6; i++ { // 4 fit behind the hung one; 2 do not
			q.push(diskJob{items: 2, run: func() error { order = append(order, i); return nil }})
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Errorf("pushing behind a hung job took %v", d)
		}
		close(release)
		if lost := q.finish(time.Now().Add(5*time.Second), false); lost != 4 || full != 4 {
			t.Errorf("%d items lost, %d told: want 4 (two jobs of 2 dropped when full)", lost, full)
		}
		if len(order) != 4 || order[0] != 1 || order[3] != 4 {
			t.Errorf("jobs ran in order %v, want [1 2 3 4]", order)
		}
	})
	t.Run("hung at exit", func(t *testing.T) {
		q := newDiskQueue(partFlight, ps, 8, false, nil)
		release := make(chan struct{})
		defer close(release)
		hang(q, 1, release)
		q.push(diskJob{items: 3, run: func() error { return nil }})
		q.push(diskJob{final: true, run: func() error { return nil }})
		start := time.Now()
		if lost := q.finish(time.Now().Add(200*time.Millisecond), true); lost != 4 {
			t.Errorf("%d items lost at the deadline, want 4 (1 being written, 3 waiting)", lost)
		}
		if d := time.Since(start); d < 200*time.Millisecond || d > time.Second {
			t.Errorf("finish returned after %v, want the 200 ms deadline", d)
		}
	})
	t.Run("discard", func(t *testing.T) {
		q := newDiskQueue(partFlight, ps, 8, false, nil)
		release := make(chan struct{})
		hang(q, 1, release)
		q.push(diskJob{items: 5, run: func() error { t.Error("a discarded job ran"); return nil }})
		finalRan := make(chan struct{})
		q.push(diskJob{final: true, run: func() error { close(finalRan); return nil }})
		go func() { time.Sleep(50 * time.Millisecond); close(release) }()
		if lost := q.finish(time.Now().Add(5*time.Second), true); lost != 5 {
			t.Errorf("%d items lost, want the 5 discarded", lost)
		}
		select {
		case <-finalRan:
		default:
			t.Error("the final job did not run")
		}
	})
	t.Run("failed", func(t *testing.T) {
		q := newDiskQueue(partFlight, ps, 8, false, nil)
		q.push(diskJob{items: 2, run: func() error { return errors.New("EIO") }})
		if lost := q.finish(time.Now().Add(5*time.Second), false); lost != 2 {
			t.Errorf("%d items lost, want the failed job's 2", lost)
		}
	})
}

// TestDiskQueuePanics: a job that panics is said once; the store goes on with the next job,
// the flight record is off (its later jobs do not run, and are counted).
func TestDiskQueuePanics(t *testing.T) {
	var buf bytes.Buffer
	out := output.NewWriter(&buf, io.Discard, "json", time.Now)
	ps := newParts(out)
	for _, tc := range []struct {
		p         part
		restart   bool
		ran, lost int
	}{{partStore, true, 3, 2}, {partFlight, false, 0, 3}} {
		q := newDiskQueue(tc.p, ps, 8, tc.restart, nil)
		ran := 0
		q.push(diskJob{items: 1, run: func() error { var m map[int]int; m[0]++; return nil }})
		q.push(diskJob{items: 1, run: func() error { ran++; return nil }})
		q.push(diskJob{items: 1, run: func() error { ran++; panic("again") }})
		q.push(diskJob{run: func() error { ran++; return nil }})
		if lost := q.finish(time.Now().Add(5*time.Second), false); lost != tc.lost || ran != tc.ran {
			t.Errorf("%s: %d lost, %d ran; want %d lost, %d ran", tc.p, lost, ran, tc.lost, tc.ran)
		}
	}
	out.Finish(func() {}, time.Second, io.Discard)
	for _, p := range []part{partStore, partFlight} {
		if n := strings.Count(buf.String(), `"part":"`+string(p)+`"`); n != 1 {
			t.Errorf("%s: said %d times, want once:\n%s", p, n, buf.String())
		}
	}
	if !ps.isOff(partFlight) || ps.isOff(partStore) {
		t.Errorf("off: flight %v (want true), store %v (want false)", ps.isOff(partFlight), ps.isOff(partStore))
	}
}
