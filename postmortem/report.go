package postmortem

import (
	"fmt"
	"time"

	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
)

// Schema names the report format; it changes only with an incompatible change.
const Schema = "gwrap.postmortem/v1"

// Report is one incident's post-mortem: the JSON file's content.
type Report struct {
	Schema    string         `json:"schema"`
	ID        string         `json:"id"`
	Created   time.Time      `json:"created"`
	Incident  Incident       `json:"incident"`
	Verdict   Verdict        `json:"verdict"`
	Timeline  []Point        `json:"timeline"`
	Deep      *probes.Deep   `json:"deep,omitempty"`
	Container ContainerState `json:"container"`
	Gunicorn  GunicornState  `json:"gunicorn"`
	Host      Host           `json:"host"`
}

// Point is one of the worker's samples, in the units people read.
type Point struct {
	T            time.Time `json:"t"`
	RSSBytes     uint64    `json:"rss_bytes"`
	AnonBytes    uint64    `json:"anon_bytes"`
	SwapBytes    uint64    `json:"swap_bytes"`
	CPUPercent   float64   `json:"cpu_percent"`
	State        string    `json:"state"`
	HeartbeatAge float64   `json:"heartbeat_age_s"` // −1 unknown
	RunDelayPct  float64   `json:"run_delay_pct"`
	MajorFaults  uint64    `json:"major_faults"`
}

// ContainerState is the container's memory and CPU at the incident, and its recent samples.
type ContainerState struct {
	CgroupVersion   int              `json:"cgroup_version,omitempty"`
	UsageBytes      *uint64          `json:"usage_bytes"`
	WorkingSetBytes *uint64          `json:"working_set_bytes"`
	LimitBytes      *uint64          `json:"limit_bytes"` // null: no limit (or unreadable)
	OOMKill         *uint64          `json:"oom_kill"`
	CPUQuotaCores   float64          `json:"cpu_quota_cores,omitempty"`
	Samples         []ContainerPoint `json:"samples"`
}

// ContainerPoint is one cgroup sample.
type ContainerPoint struct {
	T               time.Time `json:"t"`
	WorkingSetBytes uint64    `json:"working_set_bytes"`
	UsageBytes      uint64    `json:"usage_bytes"`
	Throttled       uint64    `json:"nr_throttled"`
	MemoryPSI       float64   `json:"memory_psi_some10"`
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
}

// newReport assembles a report; now is when it is made.
// NewReport makes the report of one classified incident.
func NewReport(e Evidence, v Verdict, version string, now time.Time) Report {
	inc := e.Incident
	r := Report{
		Schema:   Schema,
		ID:       fmt.Sprintf("%s-%d", inc.At.UTC().Format("20060102T150405.000Z"), inc.PID),
		Created:  now.UTC(),
		Incident: inc,
		Verdict:  v,
		Timeline: []Point{},
		Deep:     e.Deep,
		Gunicorn: GunicornState{Version: version, Timeout: e.Settings.Timeout, GracefulTimeout: e.Settings.GracefulTimeout,
			Workers: e.Settings.Workers, WorkerClass: e.Settings.WorkerClass, Threads: e.Settings.Threads,
			MaxRequests: e.Settings.MaxRequests, PreloadApp: e.Settings.PreloadApp},
	}
	for _, s := range e.Timeline {
		age := -1.0
		if s.HeartbeatAge >= 0 {
			age = s.HeartbeatAge.Seconds()
		}
		r.Timeline = append(r.Timeline, Point{T: s.Time.UTC(), RSSBytes: s.RSS(), AnonBytes: s.RSSAnon, SwapBytes: s.Swap,
			CPUPercent: s.CPUPercent(), State: s.State, HeartbeatAge: age, RunDelayPct: s.RunDelayPct, MajorFaults: s.MajorFaults})
	}
	r.Container = containerState(e.Container)
	return r
}

func containerState(sts []memwatch.Stats) ContainerState {
	c := ContainerState{Samples: []ContainerPoint{}}
	if len(sts) == 0 {
		return c
	}
	last := sts[len(sts)-1]
	c.CgroupVersion = last.Version
	opt := func(v memwatch.Value) *uint64 {
		if !v.Known {
			return nil
		}
		x := v.V
		return &x
	}
	c.UsageBytes, c.WorkingSetBytes, c.LimitBytes, c.OOMKill = opt(last.Usage), opt(last.WorkingSet), opt(last.Limit), opt(last.OOMKill)
	c.CPUQuotaCores = last.CPUQuotaCores
	for _, st := range sts {
		c.Samples = append(c.Samples, ContainerPoint{T: st.Time.UTC(), WorkingSetBytes: st.WorkingSet.V, UsageBytes: st.Usage.V,
			Throttled: st.CPUThrottled.V, MemoryPSI: st.PSI.MemorySome10})
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
