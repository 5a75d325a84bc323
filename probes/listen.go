package probes

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Saturation is how loaded Gunicorn is, from what /proc shows of the master and its workers.
//
// Listen queue. For a socket in state LISTEN, the kernel prints sk_ack_backlog (connections the
// kernel completed and that wait for accept()) as rx_queue in /proc/net/tcp{,6}
// (net/ipv4/tcp_ipv4.c and net/ipv6/tcp_ipv6.c, get_tcp{4,6}_sock: "if (state == TCP_LISTEN)
// rx_queue = READ_ONCE(sk->sk_ack_backlog)"); its tx_queue column is write_seq − snd_una,
// meaningless for a listener, NOT the backlog. The bound, sk_max_ack_backlog = min(listen()'s
// backlog, net.core.somaxconn), is not in /proc at all: it comes from NETLINK_SOCK_DIAG
// (tcp_diag_get_info: idiag_rqueue = sk_ack_backlog, idiag_wqueue = sk_max_ack_backlog for a
// listener). That is the kernel's own number, right whatever set it: Gunicorn's --backlog
// (default 2048) from any config source, the somaxconn cap of the namespace, or a socket
// inherited through GUNICORN_FD or systemd. Computing min(--backlog, somaxconn) instead would
// be wrong for inherited sockets and for settings gwrap cannot read. When the dump is refused
// or the master is in another network namespace (no inode matches), Max is unknown.
//
// Busy workers. A worker is busy when it holds an ESTABLISHED TCP socket whose local port is
// one the master listens on: it has accepted a client connection and not closed it yet. For a
// sync worker this is exactly "in a request": it accepts, handles, closes, and never keeps a
// connection alive. For gthread, gevent, eventlet and tornado it is "holds a client
// connection", which includes a keep-alive connection idle between requests (gthread keeps it
// for --keep-alive seconds, default 2): those classes can look busy while idle, and one busy
// worker may serve many requests. Sockets bound on a Unix path are not TCP: with only Unix
// listeners, Busy is unknown.
type Saturation struct {
	Listeners []Listener `json:"listeners"`
	Workers   int        `json:"workers"`    // children of the master seen
	Busy      int        `json:"busy"`       // workers holding an accepted client connection
	BusyKnown bool       `json:"busy_known"` // false when no TCP listener or no worker fd table was readable
	// HeartbeatAgeMax is the longest silence among the workers whose heartbeat file was found
	// in their fd table (read on the way, at no extra listing); negative when none was.
	HeartbeatAgeMax time.Duration `json:"heartbeat_age_max_ns"`
	// Dirty is Gunicorn 25+'s dirty pool, when the master has a dirty arbiter (not counted in
	// Workers: it serves no HTTP); nil when there is none.
	Dirty *DirtyLoad `json:"dirty,omitempty"`
}

// DirtyLoad is the dirty pool's size and its oldest heartbeat.
type DirtyLoad struct {
	Workers int `json:"workers"` // the dirty arbiter's children
	// HeartbeatAgeMax is the longest silence among the heartbeat files the arbiter holds for
	// its workers (one per live dirty worker); negative when none was readable.
	HeartbeatAgeMax time.Duration `json:"heartbeat_age_max_ns"`
}

// Listener is one of the master's listening TCP sockets.
type Listener struct {
	Addr     string `json:"addr"`      // 127.0.0.1:8000, [::]:8000
	Inode    uint64 `json:"inode"`     // socket inode
	Queue    uint64 `json:"queue"`     // connections waiting for accept() (sk_ack_backlog)
	Max      uint64 `json:"max"`       // the accept queue's bound (sk_max_ack_backlog), when MaxKnown
	MaxKnown bool   `json:"max_known"` // false when sock_diag could not say
}

// parseSocketLink returns the inode of an fd link target "socket:[12345]".
func parseSocketLink(target string) (uint64, bool) {
	const pre = "socket:["
	if len(target) < len(pre)+2 || target[:len(pre)] != pre || target[len(target)-1] != ']' {
		return 0, false
	}
	n, err := strconv.ParseUint(target[len(pre):len(target)-1], 10, 64)
	return n, err == nil
}

// saturationOf puts the pieces together (pure): the master's socket inodes, the TCP sockets of
// its network namespace, and each worker's socket inodes (nil = fd table unreadable).
func saturationOf(masterInodes map[uint64]bool, rows []tcpRow, workers []map[uint64]bool) Saturation {
	s := Saturation{Workers: len(workers)}
	ports := map[string]bool{}
	for _, r := range rows {
		if r.state != tcpListen || !masterInodes[r.inode] {
			continue
		}
		l := Listener{Addr: r.local, Inode: r.inode, Queue: r.rxq, Max: r.max, MaxKnown: r.maxKnown}
		s.Listeners = append(s.Listeners, l)
		ports[r.port] = true
	}
	if len(ports) == 0 {
		return s
	}
	accepted := map[uint64]bool{}
	for _, r := range rows {
		if r.state == tcpEstablished && ports[r.port] {
			accepted[r.inode] = true
		}
	}
	readable := 0
	for _, w := range workers {
		if w == nil {
			continue
		}
		readable++
		for in := range w {
			if accepted[in] {
				s.Busy++
				break
			}
		}
	}
	s.BusyKnown = readable > 0
	return s
}

// socketInodes lists the socket inodes among <proc>/<pid>/fd/*, and the fd links of its Gunicorn
// heartbeat files (wgunicorn-*), by fd.
func (f FS) socketInodes(pid int) (map[uint64]bool, map[int]string, error) {
	dir := f.path(pid, "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[uint64]bool, 4)
	var hb map[int]string
	for _, e := range ents {
		link := filepath.Join(dir, e.Name())
		target, err := os.Readlink(link)
		if err != nil {
			continue
		}
		if n, ok := parseSocketLink(target); ok {
			out[n] = true
		} else if strings.HasPrefix(filepath.Base(target), "wgunicorn-") {
			if fd, err := strconv.Atoi(e.Name()); err == nil {
				if hb == nil {
					hb = map[int]string{}
				}
				hb[fd] = link
			}
		}
	}
	return out, hb, nil
}

// Saturation reads the master's listening TCP sockets (its fds matched by inode against the
// sockets of the network namespace), their accept queues and bounds, and which workers hold an
// accepted client connection (<proc>/<worker>/fd). The sockets come from sock_diag (Linux; the
// namespace gwrap runs in, which the inode match confines to the master's), else from
// <proc>/<master>/net/tcp and tcp6, which cost milliseconds and have no bound. Measured with
// BenchmarkSaturation (8 idle sync workers): see scripts/bench.sh.
func (f FS) Saturation(master int, now time.Time) (Saturation, error) {
	mine, mineHB, err := f.socketInodes(master)
	if err != nil {
		return Saturation{}, fmt.Errorf("master %d sockets: %w", master, err)
	}
	kids, err := f.Children(master)
	if err != nil {
		return Saturation{}, err
	}
	sort.Slice(kids, func(i, j int) bool { return kids[i].StartTime < kids[j].StartTime })
	var masterFiles map[int]fileID
	if files, complete := identify(mineHB); complete {
		masterFiles = files
	}
	// Each child's sockets and heartbeat files; then, when one of the children that own no
	// heartbeat file of the master's is the dirty arbiter, every such child is left out of the
	// workers (as the watcher does once it knows the master runs dirty workers).
	type child struct {
		socks map[uint64]bool
		hb    map[int]string
		files map[int]fileID
		kind  childKind
		own   fileID
	}
	claimed := map[fileID]bool{}
	children := make([]child, len(kids))
	var dirty *DirtyLoad
	for i, k := range kids {
		c := &children[i]
		var err error
		c.socks, c.hb, err = f.socketInodes(k.PID) // nil when unreadable (vanished, other uid)
		var complete bool
		c.files, complete = identify(c.hb)
		c.kind, _, c.own = childRole(c.files, complete, err, masterFiles, claimed)
		claimed[c.own] = c.own != (fileID{})
		if c.kind == childOther && dirty == nil && len(c.files) > 0 && f.isArbiter(master, k.PID, masterFiles) {
			// Its children are the dirty workers, and it holds each one's heartbeat file.
			dirty = dirtyLoad(f.childrenOf(k.PID), c.hb, c.files, masterFiles, now)
		}
	}
	workers := make([]map[uint64]bool, 0, len(kids))
	ageMax := time.Duration(-1)
	extra := false // a worker holds a socket the master does not: maybe a client connection
	for _, c := range children {
		if c.kind == childOther && dirty != nil {
			continue
		}
		workers = append(workers, c.socks)
		for in := range c.socks {
			extra = extra || !mine[in]
		}
		if link := c.hb[minKey(c.hb, c.files, c.own)]; link != "" {
			if age, _, err := heartbeatAt(link, now); err == nil {
				ageMax = max(ageMax, age)
			}
		}
	}
	// Listeners alone cost ~70 µs to dump; established sockets ~450 µs (the kernel walks its
	// whole established hash), so they are dumped only when some worker holds a socket of its
	// own. Idle sync workers hold only the master's.
	states := uint32(1 << tcpStateListen)
	if extra {
		states |= 1 << tcpStateEstablished
	}
	rows, err := tcpSockets(states)
	if err != nil || !hasListener(rows, mine) {
		if rows, err = f.procTCP(master); err != nil {
			return Saturation{}, err
		}
	}
	s := saturationOf(mine, rows, workers)
	s.HeartbeatAgeMax = ageMax
	s.Dirty = dirty
	return s, nil
}

// minKey picks the heartbeat file of a worker to age: its own when told, else its lowest fd.
func minKey(hb map[int]string, files map[int]fileID, own fileID) int {
	best := -1
	for fd := range hb {
		if own != (fileID{}) && files[fd] == own {
			return fd
		}
		if best < 0 || fd < best {
			best = fd
		}
	}
	return best
}

// dirtyLoad is the dirty pool as its arbiter's fd table shows it: its children, and the oldest
// of the heartbeat files it holds that the master does not (a respawned arbiter also holds the
// HTTP workers').
func dirtyLoad(kids []int, hb map[int]string, files map[int]fileID, masterFiles map[int]fileID, now time.Time) *DirtyLoad {
	d := &DirtyLoad{Workers: len(kids), HeartbeatAgeMax: -1}
	http := idSet(masterFiles)
	for fd, link := range hb {
		if id, ok := files[fd]; !ok || http[id] {
			continue
		}
		if age, _, err := heartbeatAt(link, now); err == nil {
			d.HeartbeatAgeMax = max(d.HeartbeatAgeMax, age)
		}
	}
	return d
}

// procTCP reads <proc>/<master>/net/tcp and tcp6.
func (f FS) procTCP(master int) ([]tcpRow, error) {
	var rows []tcpRow
	read := 0
	for _, p := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(f.path(master, "net", p))
		if err != nil {
			continue // tcp6 is absent without IPv6
		}
		read++
		rows = append(rows, parseNetTCP(b)...)
	}
	if read == 0 {
		return nil, fmt.Errorf("master %d: no readable %s", master, f.path(master, "net", "tcp"))
	}
	return rows, nil
}

func hasListener(rows []tcpRow, mine map[uint64]bool) bool {
	for _, r := range rows {
		if r.state == tcpListen && mine[r.inode] {
			return true
		}
	}
	return false
}

// Queued is the number of connections waiting in all of the master's accept queues.
func (s Saturation) Queued() uint64 {
	var n uint64
	for _, l := range s.Listeners {
		n += l.Queue
	}
	return n
}

// Saturated reports whether every worker was busy while connections waited for accept(): a
// request that arrived then queued before any worker started it (more workers, or an async
// worker class, is the remedy). False when busy workers are unknown.
func (s Saturation) Saturated() bool {
	return s.BusyKnown && s.Workers > 0 && s.Busy >= s.Workers && s.Queued() > 0
}
