package flightrec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/internal/safedir"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// Record is a flight record read back.
type Record struct {
	Identity   Identity
	Settings   gunicorn.Settings // the subset the record keeps
	StopBudget time.Duration
	CgroupVer  int
	CPUQuota   memwatch.Cores // Known false: no quota

	Closed   bool      // gwrap exited cleanly
	ClosedAt time.Time // when
	Last     time.Time // the time of the last line: gwrap was alive then

	Container []memwatch.Stats              // oldest first
	Workers   map[probes.ID][]probes.Sample // each worker's samples, oldest first
	// Serving are the requests each worker was serving at its latest sample, with their ages
	// then (a worker serving none has no entry).
	Serving map[probes.ID][]postmortem.Request
	Events  []probes.Event // worker events, oldest first
	Lines   []Line         // Gunicorn's lines about workers' ends
	Signals []Signal
	OOMs    []memwatch.OOMEvent

	Dropped int // lines that did not parse (a torn last line, a zeroed tail after a crash)
}

// Line is one Gunicorn line kept in the record.
type Line struct {
	Time      time.Time
	WorkerPID int
	Text      string
}

// Signal is one signal gwrap received.
type Signal struct {
	Time      time.Time
	Name      string // SIGTERM, SIGINT, SIGQUIT… (a record of an older gwrap's "terminated" is read so)
	Forwarded bool
}

// maxSegmentRead bounds what is read of a segment: gwrap writes at most Options.SegmentBytes
// (256 KiB by default); anything much larger is not a segment of gwrap's.
const maxSegmentRead = 16 << 20

// Previous reads host's record in dir. It returns (nil, nil) when there is none (no files, or
// no segment with a readable header). Only gwrap's own regular files are read (package safedir):
// a segment name holding a symlink, a FIFO, a device or another user's file is skipped, and the
// error says so, with the record of the other segment when it has one.
func Previous(dir, host string) (*Record, error) {
	d, err := safedir.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the flight record: %w", err)
	}
	defer d.Close()
	return previous(d, host)
}

func previous(d *safedir.Dir, host string) (*Record, error) {
	names := segmentNames(d.Path(), host)
	var segs [2][]byte
	var refused []error
	for i, n := range names {
		b, err := d.ReadOwn(filepath.Base(n), maxSegmentRead)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			refused = append(refused, err)
		}
		segs[i] = b
	}
	var err error
	if len(refused) > 0 {
		err = fmt.Errorf("reading the flight record: %w", errors.Join(refused...))
	}
	return parse(host, segs[0], segs[1]), err
}

// segment is one parsed segment: its header and its lines.
type segment struct {
	hdr     *line
	lines   []line
	dropped int
}

// parseSegment parses a segment's bytes; a segment whose first line is not a header of host
// has no header and counts for nothing.
func parseSegment(host string, b []byte) segment {
	var s segment
	first := true
	for len(b) > 0 {
		var l []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			l, b = b[:i], b[i+1:]
		} else {
			l, b = b, nil // no newline: the last write was cut short
			if len(bytes.Trim(l, "\x00")) > 0 {
				s.dropped++
			}
			break
		}
		var x line
		if len(l) == 0 || json.Unmarshal(l, &x) != nil || x.K == "" || x.N == 0 {
			if len(bytes.Trim(l, "\x00")) > 0 {
				s.dropped++
			}
			first = false
			continue
		}
		if first {
			first = false
			if x.K == kindHeader && x.Host == host {
				h := x
				s.hdr = &h
				continue
			}
			return segment{} // not this host's, or its header was lost: unusable
		}
		s.lines = append(s.lines, x)
	}
	if s.hdr == nil {
		return segment{}
	}
	return s
}

// parse merges the two segments of host's record: the one with the newest header, and the other
// one when it belongs to the same run.
func parse(host string, a, b []byte) *Record {
	sa, sb := parseSegment(host, a), parseSegment(host, b)
	segs := []segment{}
	for _, s := range []segment{sa, sb} {
		if s.hdr != nil {
			segs = append(segs, s)
		}
	}
	if len(segs) == 0 {
		return nil
	}
	sort.Slice(segs, func(i, j int) bool {
		if segs[i].hdr.Start != segs[j].hdr.Start {
			return segs[i].hdr.Start < segs[j].hdr.Start
		}
		return segs[i].hdr.N < segs[j].hdr.N
	})
	newest := segs[len(segs)-1]
	h := newest.hdr
	var lines []line
	dropped := 0
	for _, s := range segs {
		if s.hdr.Start == h.Start && s.hdr.PID == h.PID {
			lines = append(lines, s.lines...)
			dropped += s.dropped
		}
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].N < lines[j].N })
	rec := &Record{
		Identity:   Identity{Host: h.Host, PID: h.PID, Version: h.Version, Start: fromMS(h.Start)},
		StopBudget: time.Duration(h.StopBudget) * time.Millisecond,
		Settings: gunicorn.Settings{Timeout: h.GTimeout, GracefulTimeout: h.GGraceful, Workers: h.GWorkers, WorkerClass: h.GClass,
			Threads: h.GThreads, MaxRequests: h.GMaxReq, PreloadApp: h.GPreload},
		CgroupVer: h.CgroupVer,
		CPUQuota:  memwatch.Cores{V: float64(h.CPUQuotaMil) / 1000, Known: h.CPUQuotaMil > 0},
		Workers:   map[probes.ID][]probes.Sample{},
		Serving:   map[probes.ID][]postmortem.Request{},
		Dropped:   dropped,
		Last:      fromMS(h.T),
	}
	for _, l := range lines {
		t := fromMS(l.T)
		if t.After(rec.Last) {
			rec.Last = t
		}
		switch l.K {
		case kindContainer:
			rec.Container = append(rec.Container, l.stats(rec.CgroupVer, rec.CPUQuota))
		case kindWorker:
			id, s := l.sample()
			rec.Workers[id] = append(rec.Workers[id], s)
			if rq := l.requests(); len(rq) > 0 {
				rec.Serving[id] = rq
			} else {
				delete(rec.Serving, id)
			}
		case kindEvent:
			id, s := l.sample()
			rec.Events = append(rec.Events, probes.Event{Kind: probes.EventKind(l.Event), ID: id, Time: t, Sample: s,
				Share: l.Share, Timeout: time.Duration(l.TimeoutMS) * time.Millisecond})
		case kindLine:
			rec.Lines = append(rec.Lines, Line{Time: t, WorkerPID: l.W, Text: l.Text})
		case kindSignal:
			rec.Signals = append(rec.Signals, Signal{Time: t, Name: oldSignalName(l.Sig), Forwarded: l.Fwd})
		case kindOOM:
			rec.OOMs = append(rec.OOMs, memwatch.OOMEvent{Time: t, Count: l.Count, Total: l.Total})
		case kindClose:
			rec.Closed, rec.ClosedAt = true, t
		}
	}
	return rec
}

func (l *line) stats(version int, quota memwatch.Cores) memwatch.Stats {
	v := func(p *uint64) memwatch.Value {
		if p == nil {
			return memwatch.Value{}
		}
		return memwatch.Value{V: *p, Known: true}
	}
	st := memwatch.Stats{Time: fromMS(l.T), Version: version, Usage: v(l.Usage), WorkingSet: v(l.WS), Limit: v(l.Limit),
		Anon: v(l.Anon), Swap: v(l.Swap), OOMKill: v(l.OOMKill), OOMGroup: v(l.OOMGroup), CPUThrottled: v(l.Throttled),
		CPUUsage: v(l.CPUUsage), CPUQuota: quota}
	if l.MemPSI != nil {
		st.PSI = memwatch.PSI{MemorySome10: *l.MemPSI, Known: true, HostWide: l.PSIHost}
	}
	return st
}

// requests are the requests of a worker sample, bounded as the writer bounds them (the record is
// in the report dir: it may have been planted).
func (l *line) requests() []postmortem.Request {
	var out []postmortem.Request
	for i, q := range l.Reqs {
		if i == maxReqs {
			break
		}
		if q.M == "" || q.A < 0 || !printable(q.M) || !printable(q.P) || !printable(q.Q) || !printable(q.R) {
			continue // gwrap's writer escapes every field (package inflight): this one is not its
		}
		out = append(out, postmortem.Request{Method: bounded(q.M, maxMethod), Path: bounded(q.P, maxPath), Query: bounded(q.Q, maxQuery),
			Remote: bounded(q.R, maxRemote), AgeSeconds: float64(q.A) / 1000})
	}
	return out
}

// printable reports whether s is UTF-8 made of printable runes only.
func printable(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func (l *line) sample() (probes.ID, probes.Sample) {
	s := probes.Sample{Time: fromMS(l.T), RSSAnon: l.RA, RSSFile: l.RF, RSSShmem: l.RS, Swap: l.SW, CPUUser: l.CU, CPUSystem: l.CS,
		State: l.State, Threads: l.Thr, MajorFaults: l.MajFlt, RunDelayPct: l.RunDelay, Heartbeats: l.Beats, Missing: l.Missing,
		HeartbeatAge: time.Duration(l.HB) * time.Millisecond}
	if l.HB < 0 {
		s.HeartbeatAge = -1
	}
	return probes.ID{PID: l.W, StartTime: l.WStart}, s
}
