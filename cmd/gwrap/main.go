// Command gwrap is the entrypoint of a container that serves a Python app with Gunicorn. It
// runs Gunicorn as its child and does PID 1's job (signals, reaping, exit codes), relays every
// log line as JSON, watches every worker and the container's cgroup, and writes a post-mortem
// report explaining every worker kill: timeout, OOM kill, signal, crash.
//
// Usage:
//
//	gwrap [flags] [--] COMMAND [ARGS...]          run COMMAND (normally gunicorn …)
//	gwrap explain [--json] LOGFILE|-               explain an existing Gunicorn log
//	gwrap report list|show ID|latest [--report-dir DIR] [--json]
//	gwrap status [--json] [--report-dir DIR]       the live gwrap's workers and their requests
//	gwrap version
//
// Flags (each also read from the environment variable in brackets; a flag wins):
//
//	--log-format json|text   [GWRAP_LOG_FORMAT]   json: one JSON object per line on stdout (default);
//	                                              text: Gunicorn's raw lines and gwrap's events for humans
//	--report-dir DIR         [GWRAP_REPORT_DIR]   where post-mortems go (default /home/LogFiles/gwrap
//	                                              when /home/LogFiles exists, as on App Service, else
//	                                              /var/log/gwrap)
//	--stop-budget DUR        [GWRAP_STOP_BUDGET]  time Gunicorn gets to stop after TERM/INT/QUIT before
//	                                              its process group is SIGKILLed (default 8s)
//	--interval DUR           [GWRAP_INTERVAL]     worker sampling period (default 1s)
//	--fast-interval DUR      [GWRAP_FAST_INTERVAL] sampling period of a late worker (default 100ms)
//	--history DUR            [GWRAP_HISTORY]      per-worker history kept for reports (default 5m)
//	--near-limit F           [GWRAP_NEAR_LIMIT]   working set ≥ F × limit is "near the limit" (default 0.9)
//	--memory-psi P           [GWRAP_MEMORY_PSI]   memory PSI some avg10 ≥ P % is pressure (default 10)
//	--cpu-bound P            [GWRAP_CPU_BOUND]    worker CPU ≥ P % of a core is computing (default 70)
//	--run-delay P            [GWRAP_RUN_DELAY]    run-queue wait ≥ P % of wall time is starved (default 20)
//	--long-share F           [GWRAP_LONG_SHARE]   silence ≥ F × timeout "ran long" (default 0.5)
//	--follow-up DUR          [GWRAP_FOLLOW_UP]    wait for follow-up lines and counters (default 3s)
//	--recycle-at P           [GWRAP_RECYCLE_AT]   recycle the worker with the most private memory when the
//	                                              container's working set stays ≥ P % of its limit (default off)
//	--recycle-worker-memory SIZE [GWRAP_RECYCLE_WORKER_MEMORY] recycle a worker whose private memory
//	                                              stays ≥ SIZE (512MiB, 1G…; default off)
//	--report-max-count N     [GWRAP_REPORT_MAX_COUNT] reports kept (default 200)
//	--report-max-bytes N     [GWRAP_REPORT_MAX_BYTES] bytes of reports kept (default 104857600)
//	--metrics-addr ADDR      [GWRAP_METRICS_ADDR] serve Prometheus /metrics on ADDR (e.g. :9191; default off)
//	--termination-log PATH   [GWRAP_TERMINATION_LOG] write a ≤1 KiB summary of the exit and the last
//	                                              verdicts here on exit (default /dev/termination-log
//	                                              when it exists, as Kubernetes mounts it; off = never)
//	--cgroup PATH            [GWRAP_CGROUP]       the container's cgroup path (default: discovered)
//	--proc-root DIR          [GWRAP_PROC_ROOT]    /proc (for tests)
//	--cgroup-root DIR        [GWRAP_CGROUP_ROOT]  /sys/fs/cgroup (for tests)
//	--python PATH            [GWRAP_PYTHON]       interpreter that evaluates Gunicorn's config file
//	                                              (default: the one in gunicorn's shebang)
//	--eval-config BOOL       [GWRAP_EVAL_CONFIG]  evaluate the config file with Python (default true);
//	                                              false reads it statically
//	--python-stacks BOOL     [GWRAP_PYTHON_STACKS] take a late worker's Python stack (every thread,
//	                                              through faulthandler on a real-time signal) and a
//	                                              crashed worker's, for worker.late and reports
//	                                              (default true); false leaves the child's
//	                                              environment untouched
//	--record-requests BOOL   [GWRAP_RECORD_REQUESTS] record the requests each worker serves (method,
//	                                              path, query, client address, start; never headers
//	                                              or bodies) through the same hook, for reports,
//	                                              worker.late and gwrap status (default true; needs
//	                                              --python-stacks)
//	--request-query MODE     [GWRAP_REQUEST_QUERY] how much of a query string is recorded and shown:
//	                                              names (default: names kept, values "…"), full, off
//
// For developers: GWRAP_CPUPROFILE=FILE writes a CPU profile of the whole run (go tool pprof).
// Go's own GOMAXPROCS (default 1 here) and GOMEMLIMIT (default 32MiB here) are honoured.
//
// Exit code: the child's; 128+N when it was killed by signal N (or when gwrap got TERM/INT/QUIT
// N while starting, before Gunicorn ran); 127 command not found; 126 not executable; 2 bad usage
// of gwrap itself (nothing started). Every flag's value is bounded (e.g. --history at most 1h);
// a value out of bounds, NaN or infinite is bad usage. A GWRAP_* variable that is not a setting
// is warned about, naming the closest one.
//
// Output can fail, supervision cannot: when stdout's reader is gone or stalls, or its disk is
// full, gwrap goes on supervising; the lines it could not write are counted in gwrap.exit
// (lines_lost) and said once on stderr.
//
// This package is the only place that knows real paths and real time; everything below it takes
// its roots and its clock as arguments. It wires: the producers (supervisor, probes' watcher,
// memwatch's cgroup sampler and OOM watcher) feed the engine; the engine's events go out through
// output (stdout, /metrics, the termination message), and its inputs to the flight record
// (flightrec, behind a disk queue: flight.go). What stays here reads /proc at scrape or stop time
// (fleet.go), the settings and the Python stacks' hook (stacks.go, requests.go), and the panic
// guards of each part (parts.go).
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
)

// startProfile writes a CPU profile of the whole run to path (GWRAP_CPUPROFILE, for developers
// measuring gwrap's own cost); "" does nothing.
func startProfile(path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gwrap: GWRAP_CPUPROFILE:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "gwrap: GWRAP_CPUPROFILE:", err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// memoryLimit is the Go runtime's soft memory limit (GOMEMLIMIT wins): gwrap's RSS stays under
// 64 MiB whatever the app prints. What gwrap holds is bounded (a line of at most 1 MiB in the
// relay, 4 MiB in the engine's queue, 8 MiB in stdout's), but a flood of lines of megabytes
// makes garbage faster than the collector's default pace (the heap may double before a
// collection) would free it; near the limit the collector runs sooner. The binary's own pages
// are another 13 MiB of RSS. An idle gwrap is far below it.
const memoryLimit = 32 << 20

func main() {
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		// One P: gwrap's work is a few reads a second and the relay, and it never takes more
		// than a core from the app. With one P, a goroutine handing a sample to another does not
		// wake a second thread, and the runtime does not re-read the CPU limit every second to
		// adjust GOMAXPROCS (Go ≥ 1.25): a third of an idle gwrap's wake-ups. GOMAXPROCS wins.
		runtime.GOMAXPROCS(1)
	}
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(memoryLimit)
	}
	if supervising(os.Args[1:]) {
		early, _ = subscribe() // first thing: see subscribe
	}
	stopProfile := startProfile(os.Getenv("GWRAP_CPUPROFILE"))
	code, err := run(os.Args[1:], os.LookupEnv, os.Stdin, os.Stdout, os.Stderr)
	stopProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gwrap:", err)
	}
	os.Exit(code)
}

const usageText = `usage: gwrap [flags] [--] COMMAND [ARGS...]
       gwrap explain [--json] LOGFILE|-
       gwrap report list|show ID|latest [--report-dir DIR] [--json]
       gwrap status [--json] [--report-dir DIR]
       gwrap version

Runs COMMAND (normally gunicorn …) as PID 1's child, relays its log as JSON on stdout,
watches its workers and the container's cgroup, and writes a post-mortem for every
worker kill. Flags (env GWRAP_<NAME>): --log-format json|text, --report-dir DIR,
--stop-budget 8s, --interval 1s, --fast-interval 100ms, --history 5m, --near-limit 0.9,
--memory-psi 10, --cpu-bound 70, --run-delay 20, --long-share 0.5, --follow-up 3s,
--recycle-at PERCENT, --recycle-worker-memory SIZE (both off by default),
--report-max-count 200, --report-max-bytes 104857600, --cgroup PATH, --proc-root DIR,
--cgroup-root DIR, --python PATH, --eval-config=true|false, --metrics-addr ADDR,
--termination-log PATH|off, --python-stacks=true|false, --record-requests=true|false,
--request-query names|full|off. See 'go doc ./cmd/gwrap'.
`
