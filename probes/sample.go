// Package probes reads Gunicorn workers from an injectable /proc root: it finds the workers
// (children of the master, each keyed by pid and start time), takes a cheap hot sample of each
// every interval (memory, CPU, state, run-queue delay, heartbeat age), a deep sample on demand
// (PSS/USS, wait channel, syscall, sockets and their peers), and keeps each worker's recent
// history in a bounded ring, also for a while after the worker vanished.
package probes

import (
	"net"
	"strings"
	"time"
)

// ID identifies a process across pid reuse: its pid and its start time in clock ticks since boot
// (field 22 of /proc/<pid>/stat).
type ID struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_ticks"`
}

// Sample is one hot sample of one worker. Byte counts are bytes; a field that could not be read
// is recorded in Missing (by field name) and left zero, so a zero is never mistaken for a reading.
type Sample struct {
	Time time.Time `json:"t"`

	RSSAnon  uint64 `json:"rss_anon"`  // RssAnon (status)
	RSSFile  uint64 `json:"rss_file"`  // RssFile
	RSSShmem uint64 `json:"rss_shmem"` // RssShmem
	Swap     uint64 `json:"swap"`      // VmSwap

	CPUUser   float64 `json:"cpu_user"`   // share of one core since the previous sample, percent 0–100
	CPUSystem float64 `json:"cpu_system"` // percent of one core
	State     string  `json:"state"`      // R, S, D, Z, T… (stat field 3)
	Threads   int     `json:"threads"`

	VoluntaryCtxt   uint64        `json:"voluntary_ctxt"`   // cumulative
	InvoluntaryCtxt uint64        `json:"involuntary_ctxt"` // cumulative
	MajorFaults     uint64        `json:"major_faults"`     // cumulative
	RunDelay        time.Duration `json:"run_delay_ns"`     // cumulative run-queue wait (schedstat field 2)
	RunDelayPct     float64       `json:"run_delay_pct"`    // run-queue wait since the previous sample, percent of wall time

	// HeartbeatAge is how long the worker has been silent: now minus the last touch of its
	// wgunicorn-* file. Negative means unknown (no heartbeat file found or unreadable).
	HeartbeatAge time.Duration `json:"heartbeat_age_ns"`
	// Heartbeats says whether the worker has touched its heartbeat file at least once since it
	// was created (a worker that never did is still booting).
	Heartbeats bool `json:"heartbeats"`
	// KillPending says a SIGKILL was pending when the sample was taken: the process was already
	// being killed (the OOM killer, Gunicorn's escalation), so its figures are not the worker's.
	KillPending bool `json:"kill_pending,omitempty"`
	// NoRates marks a worker's first sample: CPUUser, CPUSystem and RunDelayPct are rates since
	// the previous sample, so this one has none (they are unknown, not zero).
	NoRates bool `json:"no_rates,omitempty"`
	// Private is the worker's private memory (USS: Private_Clean + Private_Dirty of
	// smaps_rollup), read only when Options.Private asked for it (PrivateKnown); it is what the
	// worker's exit gives back, where its resident memory counts the pages it shares with the
	// master and its siblings too.
	Private      uint64 `json:"private,omitempty"`
	PrivateKnown bool   `json:"private_known,omitempty"`

	Missing []string `json:"missing,omitempty"`
}

// RSS is the worker's resident set: anon + file + shmem.
func (s Sample) RSS() uint64 { return s.RSSAnon + s.RSSFile + s.RSSShmem }

// CPUPercent is user + system as a share of one core, percent.
func (s Sample) CPUPercent() float64 { return s.CPUUser + s.CPUSystem }

// Socket is one of a worker's sockets with its peer.
type Socket struct {
	Proto  string `json:"proto"`            // tcp, tcp6, udp, udp6, unix
	Type   string `json:"type,omitempty"`   // unix only: stream, dgram, seqpacket
	Local  string `json:"local,omitempty"`  // 127.0.0.1:8000; for unix, the path when bound (or its listener's, when accepted)
	Remote string `json:"remote,omitempty"` // 10.0.0.5:5432; for a connected unix stream, the peer's path when it has one; empty for listening sockets
	State  string `json:"state"`            // ESTABLISHED, SYN_SENT, LISTEN…; a connected UDP socket is ESTABLISHED, an unconnected one CLOSE
	Inode  uint64 `json:"inode"`
}

// Deep is the expensive sample taken on demand for a suspect worker.
type Deep struct {
	Time    time.Time `json:"t"`
	PSS     uint64    `json:"pss"`     // smaps_rollup Pss
	USS     uint64    `json:"uss"`     // Private_Clean + Private_Dirty
	Wchan   string    `json:"wchan"`   // kernel wait channel, "" when running or unknown
	Syscall string    `json:"syscall"` // current syscall (name or number) from /proc/<pid>/syscall; "running" when in user space
	Sockets []Socket  `json:"sockets"`
	// Children are the worker's own live child processes (a subprocess it runs and may be
	// waiting for), at most maxChildren of them.
	Children  []Child  `json:"children,omitempty"`
	OpenFiles int      `json:"open_files"`
	Missing   []string `json:"missing,omitempty"`
	// Stack is the worker's Python stack taken with the deep sample (Options.Stack), nil when
	// none was asked for.
	Stack *PyStack `json:"python_stack,omitempty"`
}

// PyStack is a worker's Python stack as the stack taker gave it.
type PyStack struct {
	Frames []string `json:"frames,omitempty"` // one string per frame, innermost last
	Thread string   `json:"thread,omitempty"` // the thread the frames are of
	Top    string   `json:"top,omitempty"`    // the app's innermost frame: "app.py:42 in report"
	Call   string   `json:"call,omitempty"`   // the app's source line there, naming the C call it made
	Err    string   `json:"error,omitempty"`  // why there is no stack ("no stack: …")

	// A dirty worker's (Gunicorn 25+): whether a thread is running an action, and the action's
	// name when Gunicorn's DirtyApp dispatched it ("predict").
	DirtyRunning bool   `json:"dirty_running,omitempty"`
	DirtyAction  string `json:"dirty_action,omitempty"`
}

// Child is one of a worker's child processes.
type Child struct {
	PID int `json:"pid"`
	// Command is its command line as gwrap quotes app-controlled text: at most maxCmdline bytes
	// of it read, secrets redacted (FS.RedactArgs), an argument with spaces, quotes or bytes that
	// are not printable UTF-8 quoted with Go's escapes, the whole at most maxCommand bytes.
	Command string `json:"command"`
}

// WaitingOn names what the worker waits on, most telling first: the TCP peers it is connected
// or connecting to and the peers of its connected UDP sockets, leaving out listening sockets and
// the client connections it accepted (their local port is one it listens on), the paths of the
// unix stream sockets it is connected to (leaving out connections accepted on a path it listens
// on), its child processes, then the kernel wait channel. A worker waiting for a child to exit
// (in wait4 or waitid) names its children first. Strings have the form "tcp 127.0.0.1:5432",
// "udp 10.0.0.2:53", "unix /var/run/postgresql/.s.PGSQL.5432", "child sleep 40" and
// "wchan hrtimer_nanosleep".
func (d Deep) WaitingOn() []string {
	listening, listeningUnix := map[string]bool{}, map[string]bool{}
	for _, s := range d.Sockets {
		if s.State == "LISTEN" {
			if s.Proto == "unix" {
				listeningUnix[s.Local] = true
			} else {
				listening[port(s.Local)] = true
			}
		}
	}
	var out []string
	children := make([]string, 0, len(d.Children))
	for _, c := range d.Children {
		children = append(children, "child "+c.Command)
	}
	if d.waitsForChild() {
		out, children = append(out, children...), nil
	}
	for _, s := range d.Sockets {
		if s.State == "LISTEN" || !connected(s) || s.Proto == "unix" || listening[port(s.Local)] {
			continue
		}
		out = append(out, s.Proto+" "+s.Remote)
	}
	for _, s := range d.Sockets {
		if s.Proto != "unix" || s.Remote == "" || s.State == "LISTEN" || (s.Local != "" && listeningUnix[s.Local]) {
			continue
		}
		out = append(out, "unix "+s.Remote)
	}
	out = append(out, children...)
	if d.Wchan != "" && d.Wchan != "0" {
		out = append(out, "wchan "+d.Wchan)
	}
	return out
}

// waitsForChild reports whether the worker is blocked waiting for a child process to end.
func (d Deep) waitsForChild() bool {
	switch d.Syscall {
	case "wait4", "waitid":
		return true
	}
	return d.Wchan == "do_wait" || d.Wchan == "kernel_wait4" || d.Wchan == "do_waitid"
}

// connected reports whether a socket has a peer: a remote address that is not the unspecified
// one (an unconnected UDP socket, or a TCP socket not yet connected, shows 0.0.0.0:0), and for
// UDP, the kernel's "connected" state.
func connected(s Socket) bool {
	if s.Remote == "" {
		return false
	}
	if s.Proto == "unix" {
		return true
	}
	if (s.Proto == "udp" || s.Proto == "udp6") && s.State != "ESTABLISHED" {
		return false
	}
	host, p, err := net.SplitHostPort(s.Remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return p != "0" && ip != nil && !ip.IsUnspecified()
}

func port(hostport string) string {
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
		return hostport[i+1:]
	}
	return ""
}

// EventKind names what the watcher noticed about a worker.
type EventKind string

// The watcher's events.
const (
	EventMaster     EventKind = "master"      // a Gunicorn master was found (ID); its children are workers (Parent: the master it was found under, 0 for the first)
	EventMasterGone EventKind = "master_gone" // a master found before is gone (ID)
	EventSample     EventKind = "sample"      // a hot sample of a worker (every sweep)
	EventBoot       EventKind = "boot"        // a new child of the master appeared
	EventVanish     EventKind = "vanish"      // a worker is gone (its pid vanished or was reused)
	EventLate       EventKind = "late"        // heartbeat age crossed a share of the timeout (Share says which)
	EventRecovered  EventKind = "recovered"   // a late worker heartbeated again
	EventStuckBoot  EventKind = "stuck_boot"  // a worker that never heartbeated is older than the timeout

	EventArbiter     EventKind = "dirty_arbiter"      // the dirty arbiter was found (ID; DirtySockets): it is not an HTTP worker
	EventArbiterGone EventKind = "dirty_arbiter_gone" // the dirty arbiter is gone
	EventStack       EventKind = "stack"              // a followed dirty worker's deep sample and Python stack (Watcher.Follow)
)

// Event is one thing the watcher noticed. Sample is the worker's latest hot sample; Deep is set
// when the watcher took a deep sample for the event (late, stuck boot).
type Event struct {
	Kind   EventKind `json:"kind"`
	ID     ID        `json:"id"`
	Time   time.Time `json:"t"`
	Sample Sample    `json:"sample"`
	Deep   *Deep     `json:"deep,omitempty"`
	Share  float64   `json:"share,omitempty"` // EventLate: the share of the timeout crossed (0.5, 0.8)
	// Saturation is the whole server's load when a worker was late or stuck (nil: unreadable).
	Saturation *Saturation   `json:"saturation,omitempty"`
	Timeout    time.Duration `json:"timeout,omitempty"` // the timeout the age was judged against
	// Master is the pid of the master whose child the worker is (EventBoot).
	Master int `json:"master,omitempty"`
	// Parent is, for EventMaster, the master among whose children this one was found (a USR2
	// upgrade's new master is its old master's child); 0 for the master found under the command.
	Parent int `json:"parent,omitempty"`
	// Evidence is, for EventMaster, how the master was recognised.
	Evidence Evidence `json:"evidence,omitempty"`

	Role Role `json:"role,omitempty"` // the worker's pool: "" for an HTTP worker, "dirty" for a dirty worker
	// Dirty is what each dirty worker was doing when an HTTP worker, late, waited on the dirty
	// arbiter's socket (EventLate, the first share only).
	Dirty []DirtyCall `json:"dirty,omitempty"`
	// DirtySockets are the dirty arbiter's listening unix sockets (EventArbiter).
	DirtySockets []string `json:"dirty_sockets,omitempty"`
}
