package flightrec

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// clock is a fake clock that the tests move by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time                { return c.t }
func (c *clock) add(d time.Duration) time.Time { c.t = c.t.Add(d); return c.t }

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

const MiB = 1 << 20

func known(v uint64) memwatch.Value { return memwatch.Value{V: v, Known: true} }

func newRec(t testing.TB, dir, host string, c *clock, seg int) *Recorder {
	t.Helper()
	return Open(Options{Dir: dir, Identity: Identity{Host: host, PID: 4242, Version: "1.2.3", Start: c.now()},
		Settings:   gunicorn.Settings{Timeout: 30, GracefulTimeout: 5, Workers: 2, WorkerClass: "sync"},
		StopBudget: 8 * time.Second, SegmentBytes: seg, Now: c.now,
		Warn: func(msg string) { t.Errorf("unexpected warning: %s", msg) }})
}

// cg is a cgroup sample at t with working set ws under a 512 MiB limit.
func cg(t time.Time, ws, oomKill uint64, group bool) memwatch.Stats {
	st := memwatch.Stats{Time: t, Version: 2, Usage: known(ws + 10*MiB), WorkingSet: known(ws), Limit: known(512 * MiB), OOMKill: known(oomKill)}
	if group {
		st.OOMGroup = known(1)
	}
	return st
}

func worker(t time.Time, rss uint64) probes.Sample {
	return probes.Sample{Time: t, RSSAnon: rss, RSSFile: 5 * MiB, CPUUser: 40, CPUSystem: 2, State: "R", HeartbeatAge: 1500 * time.Millisecond, Heartbeats: true}
}

// run writes a run that grows one worker towards the limit over n seconds.
func run(r *Recorder, c *clock, n int, group bool) {
	a, b := probes.ID{PID: 101, StartTime: 9}, probes.ID{PID: 102, StartTime: 10}
	for i := 0; i < n; i++ {
		now := c.add(time.Second)
		r.Container(cg(now, uint64(100+i*4)*MiB, 0, group))
		r.Worker(a, worker(now, uint64(50+i*4)*MiB))
		r.Worker(b, worker(now, 40*MiB))
	}
}

func TestRoundTrip(t *testing.T) {
	dir, c := t.TempDir(), &clock{t0}
	r := newRec(t, dir, "web-1", c, 0)
	run(r, c, 10, false)
	r.Event(probes.Event{Kind: probes.EventLate, ID: probes.ID{PID: 101, StartTime: 9}, Time: c.add(time.Second), Sample: worker(c.now(), 90*MiB), Share: 0.5, Timeout: 30 * time.Second})
	r.Gunicorn(gunicorn.Event{Kind: gunicorn.KindTimeout, WorkerPID: 101, Line: "[2026-11-25 12:00:11 +0000] [7] [CRITICAL] WORKER TIMEOUT (pid:101)"})
	r.Gunicorn(gunicorn.Event{Kind: gunicorn.KindAccess, Line: "GET / 200"}) // not kept
	r.Signal(syscall.SIGTERM, true)
	r.OOM(memwatch.OOMEvent{Time: c.now(), Count: 1, Total: 1})

	rec, err := Previous(dir, "web-1")
	if err != nil || rec == nil {
		t.Fatalf("Previous: %v, %v", rec, err)
	}
	if rec.Closed {
		t.Error("a record not closed reads as closed")
	}
	if rec.Identity != (Identity{Host: "web-1", PID: 4242, Version: "1.2.3", Start: t0}) {
		t.Errorf("identity %+v", rec.Identity)
	}
	if rec.StopBudget != 8*time.Second || rec.Settings.Timeout != 30 || rec.Settings.Workers != 2 {
		t.Errorf("header: budget %v settings %+v", rec.StopBudget, rec.Settings)
	}
	if len(rec.Container) != 10 || rec.Container[9].WorkingSet != known(136*MiB) || rec.Container[9].Limit != known(512*MiB) {
		t.Errorf("container samples: %d, last %+v", len(rec.Container), rec.Container[len(rec.Container)-1])
	}
	if rec.Container[0].Swap.Known || rec.Container[0].OOMGroup.Known {
		t.Error("an absent reading came back as known")
	}
	ss := rec.Workers[probes.ID{PID: 101, StartTime: 9}]
	if len(ss) != 10 || ss[9].RSS() != 91*MiB || ss[9].HeartbeatAge != 1500*time.Millisecond || ss[9].CPUPercent() != 42 {
		t.Errorf("worker samples: %d, last %+v", len(ss), ss[len(ss)-1])
	}
	if len(rec.Events) != 1 || rec.Events[0].Kind != probes.EventLate || rec.Events[0].Share != 0.5 {
		t.Errorf("events %+v", rec.Events)
	}
	if len(rec.Lines) != 1 || rec.Lines[0].WorkerPID != 101 {
		t.Errorf("lines %+v", rec.Lines)
	}
	if len(rec.Signals) != 1 || rec.Signals[0].Name != "SIGTERM" || !rec.Signals[0].Forwarded {
		t.Errorf("signals %+v", rec.Signals)
	}
	if len(rec.OOMs) != 1 || rec.OOMs[0].Count != 1 {
		t.Errorf("ooms %+v", rec.OOMs)
	}
	if !rec.Last.Equal(c.now()) {
		t.Errorf("last %v, want %v", rec.Last, c.now())
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if rec, _ := Previous(dir, "web-1"); rec == nil || !rec.Closed {
		t.Error("a closed record does not read as closed")
	}
	if rep, err := Recover(dir, "web-1", c.add(time.Minute), postmortem.DefaultThresholds()); rep != nil || err != nil {
		t.Errorf("a closed record was explained: %v %v", rep, err)
	}
}

func TestNoRecord(t *testing.T) {
	rec, err := Previous(t.TempDir(), "web-1")
	if rec != nil || err != nil {
		t.Errorf("an empty dir gave %v, %v", rec, err)
	}
}

// TestTornAtEveryOffset cuts the active segment at every byte offset (a SIGKILL mid-write) and
// also, at every fifth offset, fills the cut with zeros (a node crash after the size was updated but not the data): the
// record always parses, keeps every complete line and never invents one.
func TestTornAtEveryOffset(t *testing.T) {
	dir, c := t.TempDir(), &clock{t0}
	r := newRec(t, dir, "web-1", c, minSegmentBytes)
	run(r, c, 40, false) // enough to rotate once: both segments hold lines
	names := segmentNames(dir, "web-1")
	a, _ := os.ReadFile(names[0])
	b, _ := os.ReadFile(names[1])
	if len(a) == 0 || len(b) == 0 {
		t.Fatalf("expected both segments in use: %d, %d bytes", len(a), len(b))
	}
	// The active segment is b (the second one written); a is the older.
	full := parse("web-1", a, b)
	if full == nil {
		t.Fatal("full record does not parse")
	}
	total := countLines(full)
	fromA := countLines(parse("web-1", a, nil))
	prevCount := -1
	for n := 0; n <= len(b); n++ {
		for _, zeros := range []int{0, 512} {
			if zeros > 0 && n%5 != 0 {
				continue // zeroed tails at every fifth offset keep the race build quick
			}
			cut := append(append([]byte(nil), b[:n]...), make([]byte, zeros)...)
			rec := parse("web-1", a, cut)
			if rec == nil {
				t.Fatalf("offset %d (+%d zeros): no record", n, zeros)
			}
			got := countLines(rec)
			complete := bytes.Count(b[:n], []byte("\n"))
			if complete > 0 {
				complete-- // the header is not a data line
			}
			// a's lines are always there, plus every complete data line of b.
			want := fromA + complete
			if got != want {
				t.Fatalf("offset %d (+%d zeros): %d lines, want %d", n, zeros, got, want)
			}
			if zeros == 0 {
				if got < prevCount {
					t.Fatalf("offset %d: fewer lines (%d) than at a shorter cut (%d)", n, got, prevCount)
				}
				prevCount = got
			}
		}
	}
	if prevCount != total {
		t.Errorf("uncut: %d lines, want %d", prevCount, total)
	}
}

func countLines(r *Record) int {
	n := len(r.Container) + len(r.Events) + len(r.Lines) + len(r.Signals) + len(r.OOMs)
	for _, ss := range r.Workers {
		n += len(ss)
	}
	return n
}

// TestBounds writes an hour of 8 workers at 1 Hz: neither segment outgrows its bound, and the
// record keeps the latest minutes.
func TestBounds(t *testing.T) {
	dir, c := t.TempDir(), &clock{t0}
	const seg = 64 << 10
	r := newRec(t, dir, "web-1", c, seg)
	ids := make([]probes.ID, 8)
	for i := range ids {
		ids[i] = probes.ID{PID: 200 + i, StartTime: uint64(i)}
	}
	for i := 0; i < 3600; i++ {
		now := c.add(time.Second)
		r.Container(cg(now, 200*MiB, 0, false))
		for _, id := range ids {
			r.Worker(id, worker(now, 60*MiB))
		}
	}
	var size int64
	for _, n := range Files(dir, "web-1") {
		st, err := os.Stat(n)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > seg {
			t.Errorf("%s is %d bytes, over the %d bound", n, st.Size(), seg)
		}
		size += st.Size()
	}
	rec, _ := Previous(dir, "web-1")
	if rec == nil {
		t.Fatal("no record")
	}
	first, last := rec.Container[0].Time, rec.Container[len(rec.Container)-1].Time
	if !last.Equal(c.now()) {
		t.Errorf("the last sample is %v, want %v", last, c.now())
	}
	if span := last.Sub(first); span < 30*time.Second {
		t.Errorf("the record keeps only %v", span)
	}
	t.Logf("2 × %d KiB segments: %d bytes on disk, %v of history (%d bytes a second at 8 workers)", seg>>10, size, last.Sub(first), size/int64(last.Sub(first).Seconds()+1))
}

// TestHostsSharingADir: App Service instances share /home; each reads and closes only its own.
func TestHostsSharingADir(t *testing.T) {
	dir, c := t.TempDir(), &clock{t0}
	a := newRec(t, dir, "instance-a", c, 0)
	b := newRec(t, dir, "instance-b", c, 0)
	run(a, c, 3, false)
	run(b, c, 3, false)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	ra, _ := Previous(dir, "instance-a")
	rb, _ := Previous(dir, "instance-b")
	if ra == nil || !ra.Closed || rb == nil || rb.Closed {
		t.Fatalf("a closed %v, b closed %v: each must read only its own", ra != nil && ra.Closed, rb != nil && rb.Closed)
	}
	// A restart of a replaces a's record and leaves b's alone.
	a2 := newRec(t, dir, "instance-a", c, 0)
	defer a2.Close()
	if rb2, _ := Previous(dir, "instance-b"); rb2 == nil || rb2.Closed || len(rb2.Container) != 3 {
		t.Errorf("b's record changed when a restarted: %+v", rb2)
	}
	// Host names that are not file-name safe still get distinct files; a header of another host
	// is never taken for ours.
	for _, pair := range [][2]string{{"a/b", "a_b"}, {"x y", "x_y"}, {"..", "__"}} {
		if fileID(pair[0]) == fileID(pair[1]) {
			t.Errorf("%q and %q share a file name %q", pair[0], pair[1], fileID(pair[0]))
		}
		if strings.ContainsAny(fileID(pair[0]), "/ ") {
			t.Errorf("unsafe file name %q", fileID(pair[0]))
		}
	}
	seg, _ := os.ReadFile(segmentNames(dir, "instance-b")[0])
	if parse("instance-a", seg, nil) != nil {
		t.Error("another host's segment was read as ours")
	}
}

// TestNewRunNeverMixesWithTheOld: the older segment of the previous run is emptied when a new
// run starts, and even a stale one is not merged into the new run's record.
func TestNewRunNeverMixesWithTheOld(t *testing.T) {
	dir, c := t.TempDir(), &clock{t0}
	old := newRec(t, dir, "web-1", c, minSegmentBytes)
	run(old, c, 40, false) // both segments
	old.crash()
	stale, _ := os.ReadFile(segmentNames(dir, "web-1")[1])
	c.add(time.Minute)
	r := Open(Options{Dir: dir, Identity: Identity{Host: "web-1", PID: 5000, Start: c.now()}, SegmentBytes: minSegmentBytes, Now: c.now})
	run(r, c, 2, false)
	a, _ := os.ReadFile(segmentNames(dir, "web-1")[0])
	rec := parse("web-1", a, stale)
	if rec == nil || rec.Identity.PID != 5000 || len(rec.Container) != 2 {
		t.Fatalf("new run's record mixed with the old: %v", rec != nil && rec.Identity.PID != 5000)
	}
}

func TestUnwritableDirDegradesOnce(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var warnings []string
	c := &clock{t0}
	r := Open(Options{Dir: filepath.Join(file, "reports"), Identity: Identity{Host: "web-1"}, Now: c.now,
		Warn: func(m string) { warnings = append(warnings, m) }})
	run(r, c, 3, false)
	r.Signal(syscall.SIGTERM, true)
	if err := r.Close(); err != nil {
		t.Errorf("Close of a degraded record: %v", err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "flight record") {
		t.Errorf("warnings %q, want exactly one", warnings)
	}
}

func TestShortWriteStartsTheNextLineClean(t *testing.T) {
	// A line cut short by a full disk must not swallow the next one: simulate it by cutting the
	// file after a write, then writing on.
	dir, c := t.TempDir(), &clock{t0}
	r := newRec(t, dir, "web-1", c, 0)
	run(r, c, 2, false)
	r.mu.Lock()
	st, _ := r.f.Stat()
	if err := r.f.Truncate(st.Size() - 7); err != nil {
		t.Fatal(err)
	}
	r.off -= 7
	r.torn = true
	r.mu.Unlock()
	run(r, c, 1, false)
	rec, _ := Previous(dir, "web-1")
	if rec.Dropped != 1 || len(rec.Container) != 3 {
		t.Errorf("dropped %d, container samples %d; want 1 and 3", rec.Dropped, len(rec.Container))
	}
}

// crash leaves the record as a SIGKILL would: the files closed by the kernel (which releases the
// flock), no close line.
func (r *Recorder) crash() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
	if r.lockf != nil {
		r.lockf.Close()
	}
	r.closed = true
}

// TestLiveRecordIsNotExplained: a second gwrap with the same host name in the same directory
// neither explains nor replaces a record that a live gwrap is writing.
func TestLiveRecordIsNotExplained(t *testing.T) {
	dir, c := t.TempDir(), &clock{t0}
	r := newRec(t, dir, "web-1", c, 0)
	run(r, c, 3, false)
	if rep, err := Recover(dir, "web-1", c.now(), postmortem.DefaultThresholds()); rep != nil || err != nil {
		t.Errorf("a live record was explained: %v, %v", rep != nil, err)
	}
	var warned []string
	second := Open(Options{Dir: dir, Identity: Identity{Host: "web-1", PID: 9}, Now: c.now, Warn: func(m string) { warned = append(warned, m) }})
	second.Container(cg(c.add(time.Second), 1, 0, false))
	if len(warned) != 1 || !strings.Contains(warned[0], "another live gwrap") {
		t.Errorf("warnings %q", warned)
	}
	if rec, _ := Previous(dir, "web-1"); rec == nil || rec.Identity.PID != 4242 || len(rec.Container) != 3 {
		t.Error("the second gwrap touched the live record")
	}
	r.crash()
	if rep, _ := Recover(dir, "web-1", c.now(), postmortem.DefaultThresholds()); rep == nil {
		t.Error("once its writer is dead, the record is explained")
	}
}

// TestBatch: the samples recorded during a Batch reach the file when it returns (not before,
// unless the segment rotates or another line is recorded), all of them and in order, across
// rotations, within the segments' bound.
func TestBatch(t *testing.T) {
	dir, c := t.TempDir(), &clock{t0}
	const seg = 16 << 10
	r := newRec(t, dir, "web-1", c, seg)
	size := func() int64 {
		var n int64
		for _, f := range Files(dir, "web-1") {
			if st, err := os.Stat(f); err == nil {
				n += st.Size()
			}
		}
		return n
	}
	ids := []probes.ID{{PID: 101, StartTime: 9}, {PID: 102, StartTime: 10}, {PID: 103, StartTime: 11}}
	rotations := 0
	for i := 0; i < 300; i++ {
		before, active := size(), r.active
		r.Batch(func() {
			now := c.add(time.Second)
			r.Container(cg(now, uint64(100+i)*MiB, 0, false))
			for _, id := range ids {
				r.Worker(id, worker(now, uint64(50+i)*MiB))
			}
			if r.active != active {
				rotations++
			} else if size() != before {
				t.Fatalf("batch %d: samples reached the file before the batch ended", i)
			}
			if i == 150 {
				// A signal does not wait: it goes out at once, after the samples before it.
				r.Signal(syscall.SIGTERM, true)
				if size() == before && r.active == active {
					t.Fatal("a signal waited for the batch's end")
				}
			}
		})
		if size() == before {
			t.Fatalf("batch %d: nothing written when the batch ended", i)
		}
	}
	if rotations == 0 {
		t.Fatal("no rotation happened during a batch: the test does not cover it")
	}
	for _, f := range Files(dir, "web-1") {
		if st, err := os.Stat(f); err == nil && st.Size() > seg {
			t.Errorf("%s is %d bytes, over the %d bound", f, st.Size(), seg)
		}
	}
	rec, err := Previous(dir, "web-1")
	if err != nil || rec == nil {
		t.Fatalf("Previous: %v %v", rec, err)
	}
	for i := 1; i < len(rec.Container); i++ {
		if d := rec.Container[i].Time.Sub(rec.Container[i-1].Time); d != time.Second {
			t.Fatalf("container samples %d and %d are %v apart: a line was lost or reordered", i-1, i, d)
		}
	}
	for _, id := range ids {
		ss := rec.Workers[id]
		if len(ss) == 0 {
			t.Errorf("worker %d: no samples", id.PID)
		} else if last := ss[len(ss)-1]; !last.Time.Equal(c.now()) || last.RSSAnon != 349*MiB {
			t.Errorf("worker %d: last sample %+v", id.PID, last)
		}
	}
}

// TestOldSignalNames: a record written before issue 23 named signals in Go's words
// ("terminated"); it reads with the names every event uses (SIGTERM), and its stop explains a
// previous run as a new record's does.
func TestOldSignalNames(t *testing.T) {
	hdr := `{"k":"h","n":1,"t":1764072000000,"host":"h","pid":7,"start":1764071000000,"budget":8000}`
	sig := `{"k":"s","n":2,"t":1764072001000,"sig":"terminated","fwd":true}` + "\n" + `{"k":"s","n":3,"t":1764072001500,"sig":"window changed"}`
	rec := parse("h", []byte(hdr+"\n"+sig+"\n"), nil)
	if rec == nil || len(rec.Signals) != 2 || rec.Signals[0].Name != "SIGTERM" || rec.Signals[1].Name != "SIGWINCH" {
		t.Fatalf("signals %+v", rec)
	}
	r := Explain(rec, rec.Last.Add(time.Minute), postmortem.DefaultThresholds())
	if !strings.Contains(r.Verdict.Summary, "gwrap received SIGTERM") {
		t.Errorf("summary %q", r.Verdict.Summary)
	}
}
