package metrics

import "github.com/prometheus/client_golang/prometheus"

// The gauges' descriptions: units in the names, help on every one.
var (
	descWorkers = prometheus.NewDesc("gwrap_workers",
		"Gunicorn workers alive: role=http the master's workers, role=dirty the dirty arbiter's (Gunicorn 25+).", []string{"role"}, nil)
	descBusy = prometheus.NewDesc("gwrap_workers_busy",
		"Workers holding an accepted client connection (an ESTABLISHED TCP socket on a port the master listens on): for sync workers, exactly those in a request; for gthread/gevent, also idle keep-alive connections.", []string{"role"}, nil)
	descHeartbeat = prometheus.NewDesc("gwrap_worker_heartbeat_age_max_seconds",
		"Longest time any live worker of the role has not touched its heartbeat file; Gunicorn kills a worker when this exceeds gwrap_gunicorn_timeout_seconds of the same role.", []string{"role"}, nil)
	descTimeout = prometheus.NewDesc("gwrap_gunicorn_timeout_seconds",
		"Gunicorn's worker timeout: --timeout (role=http), --dirty-timeout (role=dirty); absent when the checks are disabled (0).", []string{"role"}, nil)
	descWorkingSet = prometheus.NewDesc("gwrap_container_memory_working_set_bytes",
		"Container cgroup's memory usage minus inactive file pages (what kubelet compares with the limit).", nil, nil)
	descLimit = prometheus.NewDesc("gwrap_container_memory_limit_bytes",
		"Container cgroup's effective memory limit; absent when no limit is set.", nil, nil)
	descThrottled = prometheus.NewDesc("gwrap_container_cpu_throttled_seconds_total",
		"Time the container's tasks were held back by the CPU quota (cgroup throttled time).", nil, nil)
	descMemPressure = prometheus.NewDesc("gwrap_container_memory_pressure_ratio",
		"Share of the last 10 s in which some (kind=some) or all (kind=full) tasks stalled on memory (PSI avg10 / 100); scope=host when only /proc/pressure was readable.", []string{"kind", "scope"}, nil)
	descCPUPressure = prometheus.NewDesc("gwrap_container_cpu_pressure_ratio",
		"Share of the last 10 s in which some tasks waited for a CPU (PSI avg10 / 100); scope=host when only /proc/pressure was readable.", []string{"kind", "scope"}, nil)
	descQueueLen = prometheus.NewDesc("gwrap_listen_queue_length",
		"Connections the kernel accepted on Gunicorn's listening socket that wait for a worker's accept() (sk_ack_backlog).", []string{"listener"}, nil)
	descQueueMax = prometheus.NewDesc("gwrap_listen_queue_max",
		"Bound of that accept queue (listen()'s backlog capped by net.core.somaxconn, as the kernel reports it); when the length reaches it, new connections are dropped.", []string{"listener"}, nil)
	descInFlight = prometheus.NewDesc("gwrap_requests_in_flight",
		"Requests the HTTP workers are serving now, as each worker records them (--record-requests); absent when they are not recorded.", nil, nil)
	descOldest = prometheus.NewDesc("gwrap_request_oldest_seconds",
		"How long the oldest request in flight has run (0 when none); absent when requests are not recorded.", nil, nil)
	descBuild = prometheus.NewDesc("gwrap_build_info",
		"gwrap's version; always 1.", []string{"version", "goversion"}, nil)
	descGunicorn = prometheus.NewDesc("gwrap_gunicorn_info",
		"Gunicorn's version and worker class as gwrap read them; always 1.", []string{"version", "worker_class"}, nil)
)

// gauges is Metrics seen as a prometheus.Collector of its snapshot.
type gauges Metrics

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWorkers, descBusy, descHeartbeat, descTimeout, descWorkingSet, descLimit,
		descThrottled, descMemPressure, descCPUPressure, descQueueLen, descQueueMax, descInFlight, descOldest, descBuild, descGunicorn} {
		ch <- d
	}
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	m := (*Metrics)(g)
	s := m.read()
	if live, ok := m.live(); ok {
		s.sat = live
		if live.Workers.Known {
			s.workers = live.Workers
		}
		if live.HeartbeatAgeMax.Known {
			s.heartbeatAgeMax = live.HeartbeatAgeMax
		}
	}
	gauge := func(d *prometheus.Desc, v Value, labels ...string) {
		if v.Known {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v.V, labels...)
		}
	}
	gauge(descWorkers, s.workers, RoleHTTP)
	gauge(descBusy, s.sat.Busy, RoleHTTP)
	gauge(descHeartbeat, s.heartbeatAgeMax, RoleHTTP)
	gauge(descTimeout, s.timeout, RoleHTTP)
	gauge(descWorkers, s.sat.DirtyWorkers, RoleDirty)
	gauge(descHeartbeat, s.sat.DirtyHeartbeatAgeMax, RoleDirty)
	gauge(descTimeout, s.dirtyTimeout, RoleDirty)
	gauge(descInFlight, s.sat.RequestsInFlight)
	gauge(descOldest, s.sat.RequestOldest)
	c := s.container
	gauge(descWorkingSet, c.WorkingSetBytes)
	gauge(descLimit, c.LimitBytes)
	if c.ThrottledSeconds.Known {
		ch <- prometheus.MustNewConstMetric(descThrottled, prometheus.CounterValue, c.ThrottledSeconds.V)
	}
	scope := "container"
	if c.PressureHostWide {
		scope = "host"
	}
	gauge(descMemPressure, c.MemorySome, "some", scope)
	gauge(descMemPressure, c.MemoryFull, "full", scope)
	gauge(descCPUPressure, c.CPUSome, "some", scope)
	seen := map[string]bool{}
	for _, q := range s.sat.Queues {
		if seen[q.Listener] { // a duplicate label set would fail the whole scrape
			continue
		}
		seen[q.Listener] = true
		gauge(descQueueLen, q.Length, q.Listener)
		gauge(descQueueMax, q.Max, q.Listener)
	}
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, m.opt.Version, goVersion)
	if s.haveGunicorn {
		ch <- prometheus.MustNewConstMetric(descGunicorn, prometheus.GaugeValue, 1, s.gunicornVer, s.workerCls)
	}
}
