package postmortem

import (
	"fmt"
	"slices"
	"time"

	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
)

// Schema names the report format; it changes only with an incompatible change.
const Schema = "gwrap.postmortem/v1"

// Report is one incident's post-mortem: the JSON file's content. Its types are the report's
// own, not the samplers': a value that could not be read is null, never 0.
type Report struct {
	Schema    string         `json:"schema"`
	ID        string         `json:"id"`
	Created   time.Time      `json:"created"`
	Incident  Incident       `json:"incident"`
	Verdict   Verdict        `json:"verdict"`
	Timeline  []Point        `json:"timeline"`
	Deep      *DeepSample    `json:"deep,omitempty"`
	Container ContainerState `json:"container"`
	Gunicorn  GunicornState  `json:"gunicorn"`
	Host      Host           `json:"host"`
}

// Point is one of the worker's samples, in the units people read; null where unreadable (and
// CPU and run-queue wait on a worker's first sample, which has no previous one to compare).
type Point struct {
	T            time.Time `json:"t"`
	RSSBytes     *uint64   `json:"rss_bytes"`
	AnonBytes    *uint64   `json:"anon_bytes"`
	SwapBytes    *uint64   `json:"swap_bytes"`
	CPUPercent   *float64  `json:"cpu_percent"`
	State        string    `json:"state"`
	HeartbeatAge *float64  `json:"heartbeat_age_s"`
	RunDelayPct  *float64  `json:"run_delay_pct"`
	MajorFaults  uint64    `json:"major_faults"`
}

// DeepSample is the worker's last deep sample: what it waited on.
type DeepSample struct {
	T         time.Time    `json:"t"`
	PSS       *uint64      `json:"pss"`
	USS       *uint64      `json:"uss"`
	Wchan     string       `json:"wchan"`
	Syscall   string       `json:"syscall"`
	WaitingOn []string     `json:"waiting_on"`
	Sockets   []SocketInfo `json:"sockets"`
	OpenFiles *int         `json:"open_files"`
	Missing   []string     `json:"missing,omitempty"`
}

// SocketInfo is one of the worker's sockets.
type SocketInfo struct {
	Proto  string `json:"proto"`
	Type   string `json:"type,omitempty"`
	Local  string `json:"local,omitempty"`
	Remote string `json:"remote,omitempty"`
	State  string `json:"state"`
}

// ContainerState is the container's memory and CPU up to the incident, and its recent samples.
type ContainerState struct {
	CgroupVersion int `json:"cgroup_version,omitempty"`
	// UsageBytes and WorkingSetBytes are the last sample at or before the incident: the
	// container as the worker died, not after its memory was freed.
	UsageBytes      *uint64 `json:"usage_bytes"`
	WorkingSetBytes *uint64 `json:"working_set_bytes"`
	// WorkingSetPeakBytes is the highest working set sampled over the worker's silence, up to
	// the incident (the figure the verdict quotes).
	WorkingSetPeakBytes *uint64 `json:"working_set_peak_bytes"`
	// PeakBytes is the kernel's recorded peak usage (memory.max_usage_in_bytes, memory.peak).
	PeakBytes  *uint64 `json:"peak_bytes"`
	LimitBytes *uint64 `json:"limit_bytes"` // null: no limit (or unreadable)
	// OOMKill is the oom_kill counter at the last sample; OOMKillBefore at the first, the
	// baseline it moved from (null: unreadable, an unknown baseline rather than 0).
	OOMKill       *uint64          `json:"oom_kill"`
	OOMKillBefore *uint64          `json:"oom_kill_before"`
	CPUQuotaCores float64          `json:"cpu_quota_cores,omitempty"`
	Samples       []ContainerPoint `json:"samples"`
}

// ContainerPoint is one cgroup sample.
type ContainerPoint struct {
	T               time.Time `json:"t"`
	WorkingSetBytes *uint64   `json:"working_set_bytes"`
	UsageBytes      *uint64   `json:"usage_bytes"`
	PeakBytes       *uint64   `json:"peak_bytes"`
	Throttled       *uint64   `json:"nr_throttled"`
	MemoryPSI       *float64  `json:"memory_psi_some10"`
	OOMKill         *uint64   `json:"oom_kill"`
}

// GunicornState is what mattered of Gunicorn's settings.
type GunicornState struct {
	Version         string `json:"version,omitempty"`
	Timeout         int    `json:"timeout"`
	GracefulTimeout int    `json:"graceful_timeout"`
	Workers         int    `json:"workers"`
	WorkerClass     string `json:"worker_class"`
	Threads         int    `json:"threads"`
	MaxRequests     int    `json:"max_requests"`
	PreloadApp      bool   `json:"preload_app"`
	Platform        string `json:"platform,omitempty"`
	// Dirty workers (Gunicorn 25+), when --dirty-workers and --dirty-app are set.
	DirtyWorkers int      `json:"dirty_workers,omitempty"`
	DirtyTimeout int      `json:"dirty_timeout,omitempty"`
	DirtyThreads int      `json:"dirty_threads,omitempty"`
	DirtyApps    []string `json:"dirty_apps,omitempty"`
}

// NewReport assembles a report from the evidence the verdict was reached on; gunicornVersion is
// Gunicorn's as logged ("" unknown), now is when the report is made. Host is left for the caller.
func NewReport(e Evidence, v Verdict, gunicornVersion string, now time.Time) Report {
	inc := e.Incident
	if !statesGrowth(v.Cause) {
		inc.MemoryGrowth = nil // the growth is told where memory explains the death
	}
	r := Report{
		Schema:   Schema,
		ID:       fmt.Sprintf("%s-%d", inc.At.UTC().Format("20060102T150405.000Z"), inc.PID),
		Created:  now.UTC(),
		Incident: inc,
		Verdict:  v,
		Timeline: []Point{},
		Gunicorn: GunicornState{Version: gunicornVersion, Timeout: e.Settings.Timeout, GracefulTimeout: e.Settings.GracefulTimeout,
			Workers: e.Settings.Workers, WorkerClass: e.Settings.WorkerClass, Threads: e.Settings.Threads,
			MaxRequests: e.Settings.MaxRequests, PreloadApp: e.Settings.PreloadApp, Platform: e.Platform},
	}
	if e.Settings.DirtyWorkers > 0 && len(e.Settings.DirtyApps) > 0 {
		g := &r.Gunicorn
		g.DirtyWorkers, g.DirtyTimeout, g.DirtyThreads, g.DirtyApps = e.Settings.DirtyWorkers, e.Settings.DirtyTimeout, e.Settings.DirtyThreads, e.Settings.DirtyApps
	}
	for _, s := range e.Timeline {
		r.Timeline = append(r.Timeline, point(s))
	}
	if e.Deep != nil {
		r.Deep = deepSample(*e.Deep)
	}
	r.Container = containerState(e.Container, inc.At)
	if f := measure(e); f.WSKnown {
		r.Container.WorkingSetPeakBytes = &f.WSPeak
	}
	return r
}

func ptr[T any](v T) *T { return &v }

func point(s probes.Sample) Point {
	p := Point{T: s.Time.UTC(), State: s.State, MajorFaults: s.MajorFaults}
	if !slices.Contains(s.Missing, "status") {
		p.RSSBytes, p.AnonBytes, p.SwapBytes = ptr(s.RSS()), ptr(s.RSSAnon), ptr(s.Swap)
	}
	if !s.NoRates {
		p.CPUPercent = ptr(s.CPUPercent())
		if !slices.Contains(s.Missing, "schedstat") {
			p.RunDelayPct = ptr(s.RunDelayPct)
		}
	}
	if s.HeartbeatAge >= 0 && !slices.Contains(s.Missing, "heartbeat") {
		p.HeartbeatAge = ptr(s.HeartbeatAge.Seconds())
	}
	return p
}

func deepSample(d probes.Deep) *DeepSample {
	out := &DeepSample{T: d.Time.UTC(), Wchan: d.Wchan, Syscall: d.Syscall, WaitingOn: d.WaitingOn(), Sockets: []SocketInfo{}, Missing: d.Missing}
	if out.WaitingOn == nil {
		out.WaitingOn = []string{}
	}
	if !slices.Contains(d.Missing, "smaps_rollup") {
		out.PSS, out.USS = ptr(d.PSS), ptr(d.USS)
	}
	if !slices.Contains(d.Missing, "fd") {
		out.OpenFiles = ptr(d.OpenFiles)
	}
	for _, s := range d.Sockets {
		out.Sockets = append(out.Sockets, SocketInfo{Proto: s.Proto, Type: s.Type, Local: s.Local, Remote: s.Remote, State: s.State})
	}
	return out
}

// value is a memwatch reading as a pointer: nil when it was not read.
func value(v memwatch.Value) *uint64 {
	if !v.Known {
		return nil
	}
	return ptr(v.V)
}

func containerState(sts []memwatch.Stats, at time.Time) ContainerState {
	c := ContainerState{Samples: []ContainerPoint{}}
	if len(sts) == 0 {
		return c
	}
	first, last := sts[0], sts[len(sts)-1]
	c.CgroupVersion = last.Version
	c.OOMKill, c.OOMKillBefore = value(last.OOMKill), value(first.OOMKill)
	if last.CPUQuota.Known {
		c.CPUQuotaCores = last.CPUQuota.V
	}
	for _, st := range sts {
		if st.Limit.Known {
			c.LimitBytes = value(st.Limit)
		}
		if st.Peak.Known && (c.PeakBytes == nil || st.Peak.V > *c.PeakBytes) {
			c.PeakBytes = value(st.Peak)
		}
		if !st.Time.After(at) {
			c.UsageBytes, c.WorkingSetBytes = value(st.Usage), value(st.WorkingSet)
		}
		p := ContainerPoint{T: st.Time.UTC(), WorkingSetBytes: value(st.WorkingSet), UsageBytes: value(st.Usage), PeakBytes: value(st.Peak),
			Throttled: value(st.CPUThrottled), OOMKill: value(st.OOMKill)}
		if st.PSI.Known {
			p.MemoryPSI = ptr(st.PSI.MemorySome10)
		}
		c.Samples = append(c.Samples, p)
	}
	return c
}

// Host is what a report says about where it was written.
type Host struct {
	Hostname     string `json:"hostname,omitempty"`
	GwrapVersion string `json:"gwrap_version,omitempty"`
	// Instance names the platform's instance where one is known (App Service's
	// WEBSITE_INSTANCE_ID, a Kubernetes pod name); never a secret.
	Instance string `json:"instance,omitempty"`
}
