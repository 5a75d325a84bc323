package main

import (
	"errors"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/inflight"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// requests reads the requests each worker records through the stack hook (package inflight) for
// the engine's verdicts and late events, and for gwrap status. The files are the workers': each
// read is bounded, never follows a link and never blocks (inflight.ReadFile).
type requests struct {
	stk  *stacks
	mode inflight.QueryMode
	// mono is CLOCK_MONOTONIC now, the clock the hook stamps requests with (injectable).
	mono func() time.Duration
	fs   probes.FS // /proc, for which processes are alive
	last lastSamples
}

// newRequests returns the reader, or nil when requests are not recorded.
func newRequests(enabled bool, mode inflight.QueryMode, stk *stacks, fs probes.FS) *requests {
	if !enabled || stk == nil {
		return nil
	}
	return &requests{stk: stk, mode: mode, mono: monotonic, fs: fs, last: lastSamples{m: map[probes.ID]probes.Sample{}}}
}

// lastSamples keeps each live worker's latest hot sample, written by the watcher's goroutine
// (requests.sampled) and read by /status on the HTTP server's: the memory, CPU and heartbeat
// age it shows are those gwrap sampled last, not read again.
type lastSamples struct {
	mu sync.Mutex
	m  map[probes.ID]probes.Sample
}

// sampleKeep bounds the samples kept: a worker whose vanish was missed is forgotten once its
// sample is this old and the map is full.
const (
	sampleKeep    = 30 * time.Second
	sampleKeepMax = 4096
)

// sampled takes one of the watcher's events (its goroutine): a worker's hot sample is kept, a
// vanished worker's is dropped. A nil reader keeps nothing.
func (q *requests) sampled(ev probes.Event) {
	if q == nil || (ev.Kind != probes.EventSample && ev.Kind != probes.EventVanish) {
		return
	}
	q.last.mu.Lock()
	defer q.last.mu.Unlock()
	if ev.Kind == probes.EventVanish {
		delete(q.last.m, ev.ID)
		return
	}
	if len(q.last.m) >= sampleKeepMax {
		for id, s := range q.last.m {
			if ev.Sample.Time.Sub(s.Time) > sampleKeep {
				delete(q.last.m, id)
			}
		}
		if len(q.last.m) >= sampleKeepMax {
			return
		}
	}
	q.last.m[ev.ID] = ev.Sample
}

// lastSample is worker id's latest hot sample, if one younger than sampleKeep is kept.
func (q *requests) lastSample(id probes.ID) (probes.Sample, bool) {
	q.last.mu.Lock()
	s, ok := q.last.m[id]
	q.last.mu.Unlock()
	return s, ok && time.Since(s.Time) < sampleKeep
}

// monotonic is CLOCK_MONOTONIC now.
func monotonic() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// table reads worker id's request file: its table and true, or why there is none.
func (q *requests) table(id probes.ID) (inflight.Table, string) {
	if q.stk.hook == nil {
		if q.stk.why != "" {
			return inflight.Table{}, "no request file: " + q.stk.why
		}
		return inflight.Table{}, "no request file: Python stacks are off"
	}
	t, err := inflight.ReadFile(q.stk.hook.RequestsFile(id.PID), q.mode)
	switch {
	case errors.Is(err, inflight.ErrNoFile):
		return inflight.Table{}, "the worker made no request file (it did not load gwrap's hook)"
	case err != nil:
		return inflight.Table{}, "its request file could not be read: " + err.Error()
	case !t.Belongs(id.PID, id.StartTime):
		return inflight.Table{}, "its request file is an earlier process's"
	case t.Status != inflight.Recording:
		return inflight.Table{}, "its requests are not recorded: " + t.Status.String()
	}
	return t, ""
}

// at is engine.Config.Requests: the requests worker id was serving at `at` (a death or a late
// event; a wall-clock time gwrap saw, mapped onto CLOCK_MONOTONIC), with their ages then. A
// request cut by Gunicorn's abort counts until it was cut.
func (q *requests) at(id probes.ID, at time.Time) (out []postmortem.Request, why string) {
	ok := q.stk.ps.run(partStacks, func() {
		t, w := q.table(id)
		if w != "" {
			why = w
			return
		}
		now := q.mono()
		then := now - time.Since(at)
		if then > now {
			then = now
		}
		for _, r := range t.InFlight {
			if r.Start <= then {
				out = append(out, request(r, then))
			}
		}
		for _, r := range t.Cut {
			// Cut at the death: the abort's SystemExit ended it then. One cut long before
			// belongs to no death of this process (a process is cut only as it ends).
			out = append(out, request(r, then))
		}
	})
	if !ok {
		return nil, "requests are off after an error in gwrap"
	}
	return out, why
}

func request(r inflight.Request, now time.Duration) postmortem.Request {
	return postmortem.Request{Method: r.Method, Path: r.Path, Query: r.Query, Remote: r.Remote,
		AgeSeconds: float64(r.Age(now).Round(100*time.Millisecond)) / float64(time.Second), Thread: r.ThreadID(), Cut: r.Cut}
}

// serving is the requests worker id is serving now, with their ages (none when they cannot be
// read), for the flight record: so that a previous_run post-mortem names the requests in flight
// when the whole container died.
func (q *requests) serving(id probes.ID) (out []postmortem.Request) {
	q.stk.ps.run(partStacks, func() {
		t, why := q.table(id)
		if why != "" {
			return
		}
		now := q.mono()
		for _, r := range t.InFlight {
			out = append(out, request(r, now))
		}
	})
	return out
}

// servingFunc is serving, or nil when requests are not recorded.
func (q *requests) servingFunc() func(probes.ID) []postmortem.Request {
	if q == nil {
		return nil
	}
	return q.serving
}

// engineFunc is engine.Config.Requests: nil when requests are not recorded.
func (q *requests) engineFunc() func(probes.ID, time.Time) ([]postmortem.Request, string) {
	if q == nil {
		return nil
	}
	return q.at
}

// inFlight counts the requests the HTTP workers are serving now and the age of the oldest (for
// the gauges); ok is false when there is no status to read. A nil reader says not ok.
func (q *requests) inFlight() (n int, oldest time.Duration, ok bool) {
	st, err := q.read(nil)
	if err != nil {
		return 0, 0, false
	}
	for _, w := range st.Workers {
		n += len(w.Requests) + w.Unslotted
		for _, r := range w.Requests {
			oldest = max(oldest, time.Duration(r.AgeSeconds*float64(time.Second)))
		}
	}
	return n, oldest, true
}

// statusSchema names the JSON of /status and gwrap status.
const statusSchema = "gwrap.status/v1"

// liveStatus is what /status serves: the master's HTTP workers and the requests each serves now.
type liveStatus struct {
	Schema  string         `json:"schema"`
	At      time.Time      `json:"at"`
	Master  int            `json:"master_pid,omitempty"`
	Workers []workerStatus `json:"workers"`
}

// workerStatus is one worker in liveStatus. A figure that could not be read is null, never zero.
type workerStatus struct {
	PID   int    `json:"pid"`
	State string `json:"state"`
	Class string `json:"worker_class,omitempty"`
	// AgeSeconds is how long the worker has run.
	AgeSeconds *float64 `json:"age_s"`
	// HeartbeatAgeSeconds is how long since it last touched its heartbeat file.
	HeartbeatAgeSeconds *float64 `json:"heartbeat_age_s"`
	// RSSBytes is its resident memory (anon + file + shmem); PrivateBytes the part that is its
	// own (USS), what its exit would give back.
	RSSBytes     *uint64 `json:"rss_bytes"`
	PrivateBytes *uint64 `json:"private_bytes"`
	// CPUPercent is its CPU time (user + system) as a share of one core over the last
	// sampling interval.
	CPUPercent *float64 `json:"cpu_percent"`
	// Requests are those in flight, oldest first, with their ages now.
	Requests  []postmortem.Request `json:"requests"`
	Unslotted int                  `json:"requests_unslotted,omitempty"`
	Served    uint64               `json:"requests_served"`
	// LastSeconds is how long the request that ended last took (null: none ended yet).
	LastSeconds *float64 `json:"last_request_s"`
	// RequestsError says why its requests are unknown ("" when read).
	RequestsError string `json:"requests_error,omitempty"`
}

// status reads the live status of the workers (/status): every live process with a request file
// in the hook's directory, with the figures of its latest hot sample.
func (q *requests) status() (liveStatus, error) {
	if q == nil {
		return q.read(nil)
	}
	return q.read(q.lastSample)
}

// read reads the live status; facts gives a worker's latest sample (nil: requests only, no
// figures, for the gauges).
func (q *requests) read(facts func(probes.ID) (probes.Sample, bool)) (liveStatus, error) {
	if q == nil {
		return liveStatus{}, errors.New("requests are not recorded (--record-requests=false or --python-stacks=false)")
	}
	if q.stk.hook == nil {
		return liveStatus{}, errors.New("requests are not recorded: no stack hook")
	}
	return statusOfDir(q.stk.hook.StackDir(), q.fs, q.mono(), q.mode, facts)
}
