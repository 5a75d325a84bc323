// Package metrics is gwrap's Prometheus exposition: the counters of worker kills by verdict,
// OOM kills, late workers and started workers, and the gauges of the fleet view (workers and
// busy workers, the oldest heartbeat against the timeout, the container's working set against
// its limit, CPU throttling, pressure, Gunicorn's listen queues).
//
// It keeps its own prometheus.Registry (never the global default) and is fed through plain
// methods by output.Counts, which takes the engine's typed facts on the engine's goroutine; the HTTP server (server.go) is its own
// actor. A scrape never blocks that goroutine or the samplers: counters are atomics, gauges are
// a snapshot copied under a mutex that no I/O is done under, and the optional Live hook (read
// at scrape time, on the scraper's goroutine, at most once per LiveEvery) does its /proc reads
// outside every lock the feeders take.
//
// A value that could not be read is absent from the exposition, never a 0: no limit means no
// gwrap_container_memory_limit_bytes series. No series carries a pid (unbounded cardinality).
//
// The series about workers carry a role label: "http" for Gunicorn's workers, "dirty" for the
// dirty workers of Gunicorn 25+ (and, for kills, "dirty_arbiter" for their arbiter), so that one
// family counts both and a query tells them apart. The dirty series exist from the moment gwrap
// knows the master runs dirty workers (EnableDirty).
package metrics

import (
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// The roles of the role label.
const (
	RoleHTTP         = "http"          // a Gunicorn worker serving HTTP
	RoleDirty        = "dirty"         // a dirty worker (Gunicorn 25+)
	RoleDirtyArbiter = "dirty_arbiter" // the dirty arbiter (kills only)
)

// roles bounds the label: any other value is counted as http.
var roles = []string{RoleHTTP, RoleDirty, RoleDirtyArbiter}

func role(r string) string {
	for _, x := range roles {
		if x == r {
			return r
		}
	}
	return RoleHTTP
}

// Value is a reading that may be absent.
type Value struct {
	V     float64
	Known bool
}

// Known is a present reading.
func Known(v float64) Value { return Value{V: v, Known: true} }

// Queue is one of Gunicorn's listening sockets.
type Queue struct {
	Listener string // "127.0.0.1:8000": the label value (a handful per container)
	Length   Value  // connections waiting for accept()
	Max      Value  // the accept queue's bound
}

// Saturation is how loaded the workers are. From the Live hook, a known Workers or
// HeartbeatAgeMax also replaces SetWorkers' (the hook reads them fresher, at scrape time).
type Saturation struct {
	Workers         Value // live workers
	HeartbeatAgeMax Value // seconds
	Busy            Value // workers in a request (see probes.Saturation for the definition)
	Queues          []Queue
	// DirtyWorkers and DirtyHeartbeatAgeMax are the dirty pool's (absent: none).
	DirtyWorkers         Value
	DirtyHeartbeatAgeMax Value
	// RequestsInFlight is how many requests the workers are serving, RequestOldest how long the
	// oldest of them has run (0 when none), read from the request files of --record-requests
	// (absent: not recorded, or unreadable).
	RequestsInFlight Value
	RequestOldest    Value // seconds
}

// Container is the cgroup's side of the picture. Ratios are 0–1 (PSI avg10 / 100).
type Container struct {
	WorkingSetBytes  Value
	LimitBytes       Value // absent when no limit is set
	ThrottledSeconds Value // cumulative CPU throttled time
	MemorySome       Value // memory pressure, some, avg10
	MemoryFull       Value
	CPUSome          Value
	PressureHostWide bool // PSI read from /proc/pressure: the host's, not the container's
}

// Options configure New.
type Options struct {
	Version string // gwrap's version, for gwrap_build_info
	// Causes are the verdicts the cause label takes (postmortem.CauseNames: the package that
	// decides them owns the list); every series exists from the start at 0, so that increase()
	// sees the first kill. Any other cause string is counted as "unknown" to keep the label
	// bounded.
	Causes     []string
	LateShares []float64 // shares of the timeout the watcher reports (e.g. 0.5, 0.8): their series start at 0
	// Live, when set, is called at scrape time (on the scraper's goroutine, at most once per
	// LiveEvery; concurrent scrapes share one call) for what is cheap enough to read per scrape
	// but not every second: busy workers and listen queues (and workers and the oldest heartbeat,
	// read on the way). Its result replaces SetSaturation's.
	Live      func() (Saturation, error)
	LiveEvery time.Duration // default 1 s
	// Status, when set, is what /status serves as JSON: the workers and the requests they serve
	// now (read at each request of /status, on the server's goroutine).
	Status func() (any, error)
	Now    func() time.Time // default time.Now
}

// Metrics is gwrap's registry and the state behind it. Its methods are safe for concurrent use.
type Metrics struct {
	reg      *prometheus.Registry
	kills    *prometheus.CounterVec
	ooms     prometheus.Counter
	late     *prometheus.CounterVec
	started  *prometheus.CounterVec
	execs    *prometheus.CounterVec
	recycles *prometheus.CounterVec
	dirtyOn  sync.Once
	opt      Options
	mu       sync.Mutex // guards snap
	snap     snapshot
	liveMu   sync.Mutex // serializes Live calls; never held by a feeder
	liveAt   time.Time
	liveLast Saturation
	liveErr  error
}

// snapshot is every gauge, as last set.
type snapshot struct {
	workers                Value
	heartbeatAgeMax        Value // seconds
	timeout                Value // seconds
	dirtyTimeout           Value // seconds
	gunicornVer, workerCls string
	haveGunicorn           bool
	sat                    Saturation
	container              Container
}

// New builds the registry with every metric registered.
func New(opt Options) *Metrics {
	if opt.LiveEvery <= 0 {
		opt.LiveEvery = time.Second
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	m := &Metrics{reg: prometheus.NewRegistry(), opt: opt}
	m.kills = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gwrap_worker_kills_total",
		Help: "Gunicorn workers killed, by gwrap's verdict on why (" + strings.Join(opt.Causes, ", ") + ") and their role (http, dirty, dirty_arbiter)."}, []string{"cause", "role"})
	m.ooms = prometheus.NewCounter(prometheus.CounterOpts{Name: "gwrap_oom_kills_total",
		Help: "Processes the kernel OOM killer killed in the container's cgroup while gwrap watched (increase of its oom_kill counter)."})
	m.late = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gwrap_worker_late_total",
		Help: "Workers whose heartbeat age crossed a share of their timeout (--timeout; --dirty-timeout for role dirty), by that share."}, []string{"share", "role"})
	m.started = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gwrap_workers_started_total",
		Help: "Gunicorn workers that appeared (booted or respawned) while gwrap watched."}, []string{"role"})
	m.execs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gwrap_dirty_execution_timeouts_total",
		Help: "Dirty actions that ran past --dirty-timeout (Gunicorn answered the caller with an error but could not stop them), by what they were doing."}, []string{"cause"})
	m.recycles = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gwrap_worker_recycles_total",
		Help: "Workers gwrap recycled (SIGTERM) to keep the container out of the OOM killer, by the threshold crossed: container_memory (--recycle-at) or worker_memory (--recycle-worker-memory)."}, []string{"reason"})
	for _, r := range RecycleReasons {
		m.recycles.WithLabelValues(r)
	}
	m.initRole(RoleHTTP)
	m.reg.MustRegister(m.kills, m.ooms, m.late, m.started, m.execs, m.recycles, (*gauges)(m),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "gwrap"}))
	return m
}

// Registry is what the HTTP handler serves (and what tests gather).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// initRole makes a role's series exist at 0, so that increase() sees their first count.
func (m *Metrics) initRole(r string) {
	for _, c := range m.opt.Causes {
		m.kills.WithLabelValues(c, r)
	}
	if r == RoleDirtyArbiter {
		return
	}
	for _, s := range m.opt.LateShares {
		m.late.WithLabelValues(shareLabel(s), r)
	}
	m.started.WithLabelValues(r)
}

// EnableDirty makes the dirty pool's series exist: the master runs dirty workers.
func (m *Metrics) EnableDirty() {
	m.dirtyOn.Do(func() {
		m.initRole(RoleDirty)
		m.initRole(RoleDirtyArbiter)
		for _, c := range m.opt.Causes {
			m.execs.WithLabelValues(c)
		}
	})
}

// cause is the label of a verdict: c itself when it is one of Options.Causes.
func (m *Metrics) cause(c string) string {
	for _, x := range m.opt.Causes {
		if x == c {
			return c
		}
	}
	return "unknown"
}

// WorkerKilled counts one incident's verdict, when its post-mortem is reported, by the role of
// the process it was about.
func (m *Metrics) WorkerKilled(c, r string) {
	if r = role(r); r != RoleHTTP {
		m.EnableDirty()
	}
	m.kills.WithLabelValues(m.cause(c), r).Inc()
}

// ExecTimeout counts a dirty action that ran past --dirty-timeout, by its verdict.
func (m *Metrics) ExecTimeout(c string) {
	m.EnableDirty()
	m.execs.WithLabelValues(m.cause(c)).Inc()
}

// RecycleReasons are gwrap_worker_recycles_total's reasons (recycle.Reasons), at 0 from the start.
var RecycleReasons = []string{"container_memory", "worker_memory"}

// WorkerRecycled counts a worker gwrap recycled (a worker.recycled event), by reason.
func (m *Metrics) WorkerRecycled(reason string) { m.recycles.WithLabelValues(reason).Inc() }

// OOMKills adds n to the OOM-kill count (an oom.kill event's Count).
func (m *Metrics) OOMKills(n uint64) { m.ooms.Add(float64(n)) }

// WorkerLate counts a worker crossing share of its timeout (a worker.late event).
func (m *Metrics) WorkerLate(share float64, r string) {
	m.late.WithLabelValues(shareLabel(share), role(r)).Inc()
}

// WorkerStarted counts a new worker (a worker.boot event).
func (m *Metrics) WorkerStarted(r string) { m.started.WithLabelValues(role(r)).Inc() }

// SetWorkers sets the number of live workers and the oldest heartbeat age among them
// (heartbeatAgeMax < 0: no worker's heartbeat could be read).
func (m *Metrics) SetWorkers(workers int, heartbeatAgeMax time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snap.workers = Known(float64(workers))
	m.snap.heartbeatAgeMax = Value{}
	if heartbeatAgeMax >= 0 {
		m.snap.heartbeatAgeMax = Known(heartbeatAgeMax.Seconds())
	}
}

// SetGunicorn sets what gwrap read of Gunicorn's settings; timeout 0 (checks disabled) or
// negative (unknown) leaves gwrap_gunicorn_timeout_seconds absent.
func (m *Metrics) SetGunicorn(version, workerClass string, timeout time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snap.gunicornVer, m.snap.workerCls, m.snap.haveGunicorn = version, workerClass, true
	m.snap.timeout = Value{}
	if timeout > 0 {
		m.snap.timeout = Known(timeout.Seconds())
	}
}

// SetDirtyTimeout sets --dirty-timeout (0 or negative: absent) and makes the dirty series exist.
func (m *Metrics) SetDirtyTimeout(timeout time.Duration) {
	m.EnableDirty()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snap.dirtyTimeout = Value{}
	if timeout > 0 {
		m.snap.dirtyTimeout = Known(timeout.Seconds())
	}
}

// SetContainer sets the cgroup's latest sample.
func (m *Metrics) SetContainer(c Container) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snap.container = c
}

// SetSaturation sets busy workers and listen queues, for a feeder that samples them itself
// (unused when Options.Live is set).
func (m *Metrics) SetSaturation(s Saturation) {
	s.Queues = append([]Queue(nil), s.Queues...)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snap.sat = s
}

func (m *Metrics) read() snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snap
}

// live returns the Live hook's result, calling it at most once per LiveEvery.
func (m *Metrics) live() (Saturation, bool) {
	if m.opt.Live == nil {
		return Saturation{}, false
	}
	m.liveMu.Lock()
	defer m.liveMu.Unlock()
	if now := m.opt.Now(); m.liveAt.IsZero() || now.Sub(m.liveAt) >= m.opt.LiveEvery {
		m.liveAt = now
		m.liveLast, m.liveErr = m.opt.Live()
	}
	if m.liveErr != nil {
		return Saturation{}, true // read and failed: absent, not stale
	}
	return m.liveLast, true
}

func shareLabel(s float64) string { return strconv.FormatFloat(s, 'g', -1, 64) }

// goVersion is the toolchain that built gwrap, for gwrap_build_info.
var goVersion = runtime.Version()
