// Package flightrec keeps gwrap's flight record: a small, bounded record in the report
// directory of what the container and its workers did in the last minutes, written so that a
// SIGKILL of the whole container at any instant (a group OOM kill, a platform's stop deadline, a
// node restart) leaves a record the next start can read and explain as a post-mortem of the
// previous run.
//
// It is the engine's journal (engine.Journal): fed from the engine's inputs, on its goroutine,
// through gwrap's disk queue; what it keeps is its own one filter (Records for Gunicorn's lines,
// RecordsProbe for the watcher's events).
//
// The format. A record is two segment files, flight-<host>.a.jsonl and flight-<host>.b.jsonl,
// each at most Options.SegmentBytes. Every line is one self-contained JSON object with a
// sequence number n, a kind k and a time t (Unix milliseconds). Lines are appended with write(2),
// one line or one sweep's lines at a time (Recorder.Batch), without fsync: once written they are
// in the page cache and survive the death of every process. When a line would overflow the active segment, the other segment is truncated and
// becomes the active one, beginning with a header line (the run's identity, settings and stop
// budget), so each segment can be read alone and the record always holds between one and two
// segments of the latest history. A clean exit appends a close line.
//
// Why this shape: appends never rewrite a byte that a reader could need, so a kill mid-write can
// only tear the last line of the active segment, which the reader drops (it drops any line that
// does not parse, also the zeroed tail a node crash may leave); a rotation first truncates the
// older segment, so at the worst moment the newer one still holds a full segment of history. The
// alternative, rewriting one snapshot file atomically (temp file, rename), costs a whole file write
// per sample and a rename that is not atomic on the SMB share App Service mounts at /home.
//
// Identity: the host name is part of the file name and of every header, so containers that share
// a report directory (App Service instances share /home) never read or close each other's record;
// and a live gwrap holds an flock on flight-<host>.lock, so that a second gwrap with the same host
// name in the same directory (containers on the host network) neither explains nor replaces a
// record that is still being written.
package flightrec

import (
	"hash/fnv"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Line kinds (field k).
const (
	kindHeader    = "h" // the run's identity; first line of every segment
	kindContainer = "c" // a cgroup sample
	kindWorker    = "w" // a worker's hot sample
	kindEvent     = "e" // a worker event (late, stuck_boot, vanish, boot, recovered)
	kindLine      = "l" // a Gunicorn line about a worker's end
	kindSignal    = "s" // a signal gwrap received
	kindOOM       = "o" // an OOM-kill notification
	kindClose     = "x" // gwrap exited cleanly
)

// line is one line of the record: a flat union of every kind, short names to keep it small.
// Optional cgroup readings are pointers: absent stays absent, never zero.
type line struct {
	K string `json:"k"`
	N uint64 `json:"n"`
	T int64  `json:"t"` // Unix milliseconds

	// header
	Host        string `json:"host,omitempty"`
	PID         int    `json:"pid,omitempty"`
	Version     string `json:"ver,omitempty"`
	Start       int64  `json:"start,omitempty"`  // Unix milliseconds
	StopBudget  int64  `json:"budget,omitempty"` // milliseconds
	GTimeout    int    `json:"gto,omitempty"`    // Gunicorn's timeout, seconds
	GGraceful   int    `json:"ggrace,omitempty"` // graceful_timeout, seconds
	GWorkers    int    `json:"gworkers,omitempty"`
	GClass      string `json:"gclass,omitempty"`
	GThreads    int    `json:"gthreads,omitempty"`
	GMaxReq     int    `json:"gmaxreq,omitempty"`
	GPreload    bool   `json:"gpreload,omitempty"`
	CgroupVer   int    `json:"cgv,omitempty"`
	CPUQuotaMil int64  `json:"quota_m,omitempty"` // CPU quota, thousandths of a core

	// container sample
	Usage     *uint64  `json:"u,omitempty"`
	WS        *uint64  `json:"ws,omitempty"`
	Limit     *uint64  `json:"lim,omitempty"`
	Anon      *uint64  `json:"anon,omitempty"`
	Swap      *uint64  `json:"swap,omitempty"`
	OOMKill   *uint64  `json:"ok,omitempty"`
	OOMGroup  *uint64  `json:"og,omitempty"`
	Throttled *uint64  `json:"thr,omitempty"`
	CPUUsage  *uint64  `json:"cpu_ns,omitempty"`
	MemPSI    *float64 `json:"mpsi,omitempty"`
	PSIHost   bool     `json:"psi_host,omitempty"`

	// worker sample and worker event
	W         int       `json:"w,omitempty"`   // worker pid
	WStart    uint64    `json:"ws0,omitempty"` // worker start ticks
	RA        uint64    `json:"ra,omitempty"`
	RF        uint64    `json:"rf,omitempty"`
	RS        uint64    `json:"rs,omitempty"`
	SW        uint64    `json:"sw,omitempty"`
	CU        float64   `json:"cu,omitempty"`
	CS        float64   `json:"cs,omitempty"`
	State     string    `json:"st,omitempty"`
	Thr       int       `json:"th,omitempty"`
	MajFlt    uint64    `json:"mf,omitempty"`
	RunDelay  float64   `json:"rd,omitempty"`
	HB        int64     `json:"hb,omitempty"` // heartbeat age, ms; −1 unknown
	Beats     bool      `json:"beats,omitempty"`
	Missing   []string  `json:"miss,omitempty"`
	Event     string    `json:"ev,omitempty"`
	Share     float64   `json:"share,omitempty"`
	TimeoutMS int64     `json:"to,omitempty"`
	Waiting   []string  `json:"wait,omitempty"`
	Reqs      []reqLine `json:"rq,omitempty"` // the requests in flight at a worker sample

	// Gunicorn line
	Text string `json:"line,omitempty"`

	// signal
	Sig string `json:"sig,omitempty"`
	Fwd bool   `json:"fwd,omitempty"`

	// OOM notification
	Count uint64 `json:"cnt,omitempty"`
	Total uint64 `json:"tot,omitempty"`
}

// reqLine is a request a worker was serving at a sample, as the request file showed it (query
// as --request-query keeps it): its age then, in milliseconds.
type reqLine struct {
	M string `json:"m"`
	P string `json:"p"`
	Q string `json:"q,omitempty"`
	R string `json:"r,omitempty"`
	A int64  `json:"a"`
}

// maxText bounds a Gunicorn line in the record.
const maxText = 1024

// Bounds of the requests a worker sample keeps: how many (the oldest first), and the length of
// each field (the request file's own bounds).
const (
	maxReqs   = 16
	maxMethod = 16
	maxPath   = 640
	maxQuery  = 236
	maxRemote = 56
)

// bounded cuts s to at most n bytes, on a rune boundary.
func bounded(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Prefix begins every file name of a flight record: gwrap (and retention) recognise them by it.
const Prefix = "flight-"

// segmentNames are the record's two segment files for host in dir.
func segmentNames(dir, host string) [2]string {
	id := fileID(host)
	return [2]string{filepath.Join(dir, Prefix+id+".a.jsonl"), filepath.Join(dir, Prefix+id+".b.jsonl")}
}

// lockName is the file whose flock marks host's record as owned by a live gwrap.
func lockName(dir, host string) string { return filepath.Join(dir, Prefix+fileID(host)+".lock") }

// fileID is host as it may appear in a file name: the host name itself when it is made of
// letters, digits, dot, dash and underscore (every DNS name is), else the safe characters and a
// hash of the name, so that two different hosts never share a file.
func fileID(host string) string {
	if host == "" {
		host = "unknown"
	}
	safe := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '_'
	}, host)
	if len(safe) > 64 {
		safe = safe[:64]
	}
	if safe == host && !strings.HasPrefix(host, ".") {
		return safe
	}
	h := fnv.New32a()
	h.Write([]byte(host))
	return safe + "~" + strconv.FormatUint(uint64(h.Sum32()), 16)
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}
