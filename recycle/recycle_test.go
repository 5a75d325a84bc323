package recycle

import (
	"strings"
	"testing"
	"time"
)

const mib = 1 << 20

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// w is a worker booted at bootS seconds with private MiB.
func w(pid int, bootS float64, private uint64) Worker {
	return Worker{Key: Key{PID: pid, Start: uint64(pid) * 10}, BootedAt: at(bootS), Private: private * mib, PrivateKnown: true, Anon: private * mib}
}

// step is one thing that happens to a recycler: a container sample (ws MiB of limit MiB), a
// worker's private-memory sample, a decision asked for with the live workers, or a worker gone.
type step struct {
	t       float64
	ws      uint64 // container sample: working set MiB (with limit)
	limit   uint64
	unknown bool // container sample that could not be read
	wk      *Key // worker sample of this worker
	priv    uint64
	gone    *Key
	decide  []Worker
	// what Decide must say
	recycle int // pid, 0: none
	reason  Reason
	measure Measure
	held    Hold
	gaveUp  int // pid
}

func run(t *testing.T, p Policy, steps []step) *Recycler {
	t.Helper()
	r := New(p)
	for i, s := range steps {
		switch {
		case s.limit > 0 || s.unknown:
			r.Container(Sample{At: at(s.t), WorkingSet: s.ws * mib, Limit: s.limit * mib, Known: !s.unknown})
		case s.wk != nil:
			r.WorkerSample(*s.wk, s.priv*mib, s.priv > 0)
		case s.gone != nil:
			r.Gone(*s.gone)
		case s.decide != nil:
			d := r.Decide(at(s.t), s.decide)
			got := 0
			if d.Recycle != nil {
				got = d.Recycle.Key.PID
			}
			if got != s.recycle || d.Reason != s.reason || d.Held != s.held {
				t.Fatalf("step %d at %.1fs: recycle %d reason %q held %q, want %d %q %q", i, s.t, got, d.Reason, d.Held, s.recycle, s.reason, s.held)
			}
			if s.measure != "" && d.Measure != s.measure {
				t.Fatalf("step %d: measure %q, want %q", i, d.Measure, s.measure)
			}
			gave := 0
			if d.GaveUp != nil {
				gave = d.GaveUp.Worker.Key.PID
			}
			if gave != s.gaveUp {
				t.Fatalf("step %d: gave up on %d, want %d", i, gave, s.gaveUp)
			}
		}
	}
	return r
}

func key(pid int) *Key { return &Key{PID: pid, Start: uint64(pid) * 10} }

func TestRecycle(t *testing.T) {
	at80 := Policy{At: 0.8, Samples: 3, MinAge: 10 * time.Second, Interval: 10 * time.Second, Graceful: 30 * time.Second}
	two := []Worker{w(1, 0, 100), w(2, 0, 150)}
	tests := []struct {
		name  string
		p     Policy
		steps []step
	}{
		{"off: nothing, whatever the memory", Policy{}, []step{
			{t: 20, ws: 299, limit: 300}, {t: 21, ws: 299, limit: 300}, {t: 22, ws: 299, limit: 300},
			{t: 22, decide: two},
		}},
		{"three samples over: the worker with the most private memory", at80, []step{
			{t: 20, ws: 250, limit: 300}, {t: 20, decide: two},
			{t: 21, ws: 250, limit: 300}, {t: 21, decide: two},
			{t: 22, ws: 250, limit: 300}, {t: 22, decide: two, recycle: 2, reason: ReasonContainer, measure: MeasurePrivate},
		}},
		{"exactly at the threshold counts", at80, []step{
			{t: 20, ws: 240, limit: 300}, {t: 21, ws: 240, limit: 300}, {t: 22, ws: 240, limit: 300},
			{t: 22, decide: two, recycle: 2, reason: ReasonContainer},
		}},
		{"a dip breaks the streak", at80, []step{
			{t: 20, ws: 250, limit: 300}, {t: 21, ws: 250, limit: 300}, {t: 22, ws: 200, limit: 300},
			{t: 23, ws: 250, limit: 300}, {t: 24, ws: 250, limit: 300}, {t: 24, decide: two},
			{t: 25, ws: 250, limit: 300}, {t: 25, decide: two, recycle: 2, reason: ReasonContainer},
		}},
		{"an unreadable sample breaks the streak", at80, []step{
			{t: 20, ws: 250, limit: 300}, {t: 21, ws: 250, limit: 300}, {t: 22, unknown: true},
			{t: 23, ws: 250, limit: 300}, {t: 23, decide: two},
		}},
		{"no limit: never", at80, []step{
			{t: 20, ws: 250, limit: 0, unknown: true}, {t: 21, ws: 250, limit: 0, unknown: true}, {t: 22, ws: 250, limit: 0, unknown: true},
			{t: 22, decide: two},
		}},
		{"one at a time: the next waits for the first to exit, then for the interval", at80, []step{
			{t: 20, ws: 250, limit: 300}, {t: 21, ws: 250, limit: 300}, {t: 22, ws: 250, limit: 300},
			{t: 22, decide: two, recycle: 2, reason: ReasonContainer},
			{t: 23, ws: 250, limit: 300}, {t: 24, ws: 250, limit: 300}, {t: 25, ws: 250, limit: 300},
			{t: 25, decide: two, held: HoldPending},
			{gone: key(2)},
			{t: 26, decide: []Worker{w(1, 0, 100)}, held: HoldInterval},
			{t: 32, decide: []Worker{w(1, 0, 100), w(3, 26, 5)}, recycle: 1, reason: ReasonContainer},
		}},
		{"a worker gone from the list is no longer pending", at80, []step{
			{t: 20, ws: 250, limit: 300}, {t: 21, ws: 250, limit: 300}, {t: 22, ws: 250, limit: 300},
			{t: 22, decide: two, recycle: 2, reason: ReasonContainer},
			{t: 33, ws: 250, limit: 300}, {t: 34, ws: 250, limit: 300}, {t: 35, ws: 250, limit: 300},
			{t: 35, decide: []Worker{w(1, 0, 100), w(3, 23, 50)}, recycle: 1, reason: ReasonContainer},
		}},
		{"never while a worker is booting", at80, []step{
			{t: 20, ws: 250, limit: 300}, {t: 21, ws: 250, limit: 300}, {t: 22, ws: 250, limit: 300},
			{t: 22, decide: []Worker{w(1, 0, 100), {Key: Key{PID: 3}, BootedAt: at(21.5), Booting: true}}, held: HoldBooting},
			{t: 23, ws: 250, limit: 300},
			{t: 23, decide: []Worker{w(1, 0, 100), w(3, 21.5, 10)}, recycle: 1, reason: ReasonContainer},
		}},
		{"never a worker younger than the minimum age: the oldest large enough is taken", at80, []step{
			{t: 20, ws: 250, limit: 300}, {t: 21, ws: 250, limit: 300}, {t: 22, ws: 250, limit: 300},
			{t: 22, decide: []Worker{w(1, 0, 100), w(2, 15, 150)}, recycle: 1, reason: ReasonContainer},
		}},
		{"all too young: held, and said", at80, []step{
			{t: 5, ws: 250, limit: 300}, {t: 6, ws: 250, limit: 300}, {t: 7, ws: 250, limit: 300},
			{t: 7, decide: []Worker{w(1, 0, 100), w(2, 1, 150)}, held: HoldYoung},
		}},
		{"a worker told to stop is not a candidate", at80, []step{
			{t: 20, ws: 250, limit: 300}, {t: 21, ws: 250, limit: 300}, {t: 22, ws: 250, limit: 300},
			{t: 22, decide: []Worker{w(1, 0, 100), func() Worker { x := w(2, 0, 150); x.Stopping = true; return x }()}, recycle: 1, reason: ReasonContainer},
		}},
		{"private memory decides, not anonymous RSS (copy-on-write pages shared with the master)", at80, []step{
			{t: 20, ws: 250, limit: 300}, {t: 21, ws: 250, limit: 300}, {t: 22, ws: 250, limit: 300},
			{t: 22, decide: []Worker{
				{Key: Key{PID: 1}, BootedAt: at(0), Private: 40 * mib, PrivateKnown: true, Anon: 200 * mib},
				{Key: Key{PID: 2}, BootedAt: at(0), Private: 90 * mib, PrivateKnown: true, Anon: 120 * mib},
			}, recycle: 2, reason: ReasonContainer, measure: MeasurePrivate},
		}},
		{"private memory unreadable everywhere: anonymous memory, and said", at80, []step{
			{t: 20, ws: 250, limit: 300}, {t: 21, ws: 250, limit: 300}, {t: 22, ws: 250, limit: 300},
			{t: 22, decide: []Worker{
				{Key: Key{PID: 1}, BootedAt: at(0), Anon: 200 * mib},
				{Key: Key{PID: 2}, BootedAt: at(0), Anon: 120 * mib},
			}, recycle: 1, reason: ReasonContainer, measure: MeasureAnon},
		}},
		{"still alive after the graceful timeout: given up, left to Gunicorn, never chosen again", at80, []step{
			{t: 20, ws: 250, limit: 300}, {t: 21, ws: 250, limit: 300}, {t: 22, ws: 250, limit: 300},
			{t: 22, decide: two, recycle: 2, reason: ReasonContainer},
			{t: 40, ws: 250, limit: 300}, {t: 41, ws: 250, limit: 300}, {t: 42, ws: 250, limit: 300},
			{t: 42, decide: two, held: HoldPending},
			{t: 52, decide: two, gaveUp: 2},
			{t: 53, decide: two, recycle: 1, reason: ReasonContainer},
		}},
		{"one worker over --recycle-worker-memory for three samples", Policy{WorkerBytes: 120 * mib, Samples: 3, MinAge: 10 * time.Second}, []step{
			{wk: key(1), priv: 100}, {wk: key(2), priv: 130}, {t: 20, decide: two},
			{wk: key(1), priv: 100}, {wk: key(2), priv: 131}, {t: 21, decide: two},
			{wk: key(1), priv: 100}, {wk: key(2), priv: 132}, {t: 22, decide: two, recycle: 2, reason: ReasonWorker},
		}},
		{"a worker sample not read (under the threshold by its RSS) breaks its streak", Policy{WorkerBytes: 120 * mib, Samples: 2}, []step{
			{wk: key(2), priv: 130}, {wk: key(2), priv: 0}, {wk: key(2), priv: 130}, {t: 22, decide: two},
			{wk: key(2), priv: 130}, {t: 23, decide: two, recycle: 2, reason: ReasonWorker},
		}},
		{"over --recycle-worker-memory but too young", Policy{WorkerBytes: 120 * mib, Samples: 1, MinAge: 10 * time.Second}, []step{
			{wk: key(2), priv: 130}, {t: 5, decide: []Worker{w(1, 0, 10), w(2, 0, 130)}, held: HoldYoung},
		}},
		{"both thresholds: the container's comes first, and takes the largest", Policy{At: 0.8, WorkerBytes: 60 * mib, Samples: 1}, []step{
			{wk: key(1), priv: 100}, {t: 20, ws: 250, limit: 300},
			{t: 20, decide: two, recycle: 2, reason: ReasonContainer},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { run(t, tc.p, tc.steps) })
	}
}

func TestExplain(t *testing.T) {
	at80 := Policy{At: 0.8, Samples: 3, MinAge: 10 * time.Second, Interval: 10 * time.Second}
	cases := []struct {
		name  string
		p     Policy
		steps []step
		at    float64
		want  string
	}{
		{"off", Policy{}, nil, 10, "recycling was off"},
		{"climbed between two samples", at80, []step{{t: 9, ws: 150, limit: 300}}, 10, "50 % of the limit, under the threshold"},
		{"too few samples", at80, []step{{t: 9, ws: 250, limit: 300}}, 10, "over the threshold for 1 of the 3 samples"},
		{"too young", at80, []step{
			{t: 5, ws: 250, limit: 300}, {t: 6, ws: 250, limit: 300}, {t: 7, ws: 250, limit: 300},
			{t: 7, decide: []Worker{w(1, 0, 100)}, held: HoldYoung},
		}, 8, "younger than the minimum age (10s)"},
		{"being recycled", at80, []step{
			{t: 20, ws: 250, limit: 300}, {t: 21, ws: 250, limit: 300}, {t: 22, ws: 250, limit: 300},
			{t: 22, decide: []Worker{w(1, 0, 100)}, recycle: 1, reason: ReasonContainer},
		}, 23, "worker 1 was being recycled"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.p, tc.steps)
			if got := r.Explain(at(tc.at)); !strings.Contains(got, tc.want) {
				t.Errorf("Explain: %q, want it to contain %q", got, tc.want)
			}
		})
	}
}
