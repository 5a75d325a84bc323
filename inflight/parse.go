package inflight

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"
)

// Errors of Read; errors wrap one of them.
var (
	ErrNotRequests = errors.New("not a request file")     // wrong magic, version or sizes
	ErrShort       = errors.New("request file too short") // cut before its header or used slots
)

// Request is one request a worker served or was serving, its strings escaped and bounded.
type Request struct {
	Method string // e.g. "GET"; escaped
	Path   string // escaped; ends with "…" when cut
	// PathBytes is the length of the whole path in bytes (it may be far longer than Path).
	PathBytes int
	Query     string // as the query mode shows it; "" when none or off
	Remote    string // the client's address as the server saw it; "" when unknown
	// Start is when the request started, End when it ended (cut requests only), on
	// CLOCK_MONOTONIC.
	Start, End time.Duration
	Thread     uint64 // the thread serving it (Python's threading.get_ident())
	Task       uint64 // the greenlet or asyncio task serving it; 0 for a thread
	// Cut: it did not end normally: it ended by SystemExit or KeyboardInterrupt, or after the
	// worker's SIGABRT (Gunicorn's timeout).
	Cut bool
}

// Age is how long the request had run at now (CLOCK_MONOTONIC); for a cut request, until it
// was cut. Never negative.
func (r Request) Age(now time.Duration) time.Duration {
	end := now
	if r.Cut && r.End != 0 {
		end = r.End
	}
	if end < r.Start {
		return 0
	}
	return end - r.Start
}

// ThreadID is the thread's id as faulthandler writes it in a stack ("0x00007f56696ff6c0").
func (r Request) ThreadID() string {
	return fmt.Sprintf("0x%016x", r.Thread)
}

// Target is the request line's target as shown: path and, when kept, "?" and the query.
func (r Request) Target() string {
	if r.Query == "" {
		return r.Path
	}
	return r.Path + "?" + r.Query
}

// String is "GET /path?name=… from 10.0.0.7".
func (r Request) String() string {
	s := r.Method + " " + r.Target()
	if r.Remote != "" {
		s += " from " + r.Remote
	}
	return s
}

// Table is what a worker's request file says.
type Table struct {
	PID        int
	StartTicks uint64 // the process's start time (clock ticks after boot); 0 unknown
	Class      string // the worker class as the hook named it ("sync", "gthread", …)
	Model      Model
	Status     Status
	Slots      int // how many requests it can record at once
	// InFlight are the requests running, oldest first; Cut the requests that did not end
	// normally and whose slot was not used again since, oldest first.
	InFlight, Cut []Request
	// Unslotted requests were in flight without a slot (all were taken); Unrecorded counts
	// every request that found none.
	Unslotted  int
	Unrecorded uint64
	Served     uint64 // requests that ended (normally or cut) in all slots
	// LastDuration is how long the request that ended last took; LastEnd when it ended
	// (CLOCK_MONOTONIC); both 0 when none ended.
	LastDuration, LastEnd time.Duration
	// Abort is when the worker's SIGABRT handler ran (Gunicorn's timeout), 0 never.
	Abort time.Duration
	// Bad counts slots that were not read: written while read, again and again, or nonsense.
	Bad int
}

// Belongs reports whether the table is the one of process pid started at startTicks (the
// clock ticks after boot of /proc/<pid>/stat), and not left by an earlier process of that pid.
// A table that does not know its start time belongs by its pid alone.
func (t Table) Belongs(pid int, startTicks uint64) bool {
	return t.PID == pid && (t.StartTicks == 0 || startTicks == 0 || t.StartTicks == startTicks)
}

// Oldest is the oldest request in flight and true, or false when none is.
func (t Table) Oldest() (Request, bool) {
	if len(t.InFlight) == 0 {
		return Request{}, false
	}
	return t.InFlight[0], true
}

// maxRetries bounds the reads of a slot the worker was writing.
const maxRetries = 3

// Read reads a request file through r (at most MaxFile bytes, in bounded preads) and shows
// queries under mode, or under the hook's mode where that is stricter.
func Read(r io.ReaderAt, mode QueryMode) (Table, error) {
	var hdr [HeaderSize]byte
	if n, err := r.ReadAt(hdr[:], 0); n < HeaderSize {
		if err == nil || err == io.EOF {
			err = ErrShort
		}
		return Table{}, fmt.Errorf("inflight: header: %w", err)
	}
	t, used, err := parseHeader(hdr[:])
	if err != nil {
		return Table{}, err
	}
	if t.Status != Recording || used == 0 {
		return t, nil
	}
	if hook := QueryMode(hdr[hQuery]); hook < mode {
		mode = hook
	}
	buf := make([]byte, used*SlotSize)
	if n, err := r.ReadAt(buf, HeaderSize); n < len(buf) {
		if err == nil || err == io.EOF {
			err = ErrShort
		}
		return Table{}, fmt.Errorf("inflight: %d slots: %w", used, err)
	}
	var lastEnd time.Duration
	for i := range used {
		b := buf[i*SlotSize : (i+1)*SlotSize]
		for try := 0; torn(b) && try < maxRetries; try++ {
			if n, _ := r.ReadAt(b, int64(HeaderSize+i*SlotSize)); n < SlotSize {
				break
			}
		}
		s, err := parseSlot(b, mode)
		if err != nil {
			t.Bad++
			continue
		}
		t.Served += s.served
		if s.served > 0 && s.lastEnd >= lastEnd {
			lastEnd, t.LastEnd, t.LastDuration = s.lastEnd, s.lastEnd, s.last
		}
		switch s.state {
		case stateInFlight:
			t.InFlight = append(t.InFlight, s.req)
		case stateCut:
			t.Cut = append(t.Cut, s.req)
		}
	}
	byStart := func(rs []Request) {
		sort.SliceStable(rs, func(i, j int) bool { return rs[i].Start < rs[j].Start })
	}
	byStart(t.InFlight)
	byStart(t.Cut)
	return t, nil
}

// Parse reads a whole request file held in b (Read over bytes).
func Parse(b []byte, mode QueryMode) (Table, error) {
	return Read(bytes.NewReader(b), mode)
}

var le = binary.LittleEndian

// parseHeader checks the header and returns the table it describes and how many slots to read.
func parseHeader(h []byte) (Table, int, error) {
	if string(h[:4]) != magic {
		return Table{}, 0, fmt.Errorf("inflight: magic %q: %w", h[:4], ErrNotRequests)
	}
	if v := le.Uint16(h[hVersion:]); v != Version {
		return Table{}, 0, fmt.Errorf("inflight: version %d: %w", v, ErrNotRequests)
	}
	if hs, ss := le.Uint16(h[hHeaderSize:]), le.Uint16(h[hSlotSize:]); hs != HeaderSize || ss != SlotSize {
		return Table{}, 0, fmt.Errorf("inflight: header %d and slot %d bytes: %w", hs, ss, ErrNotRequests)
	}
	slots := int(le.Uint16(h[hSlots:]))
	if slots > MaxSlots {
		return Table{}, 0, fmt.Errorf("inflight: %d slots: %w", slots, ErrNotRequests)
	}
	status := Status(h[hStatus])
	model := Model(h[hModel])
	if status > AppNotWrapped || QueryMode(h[hQuery]) > QueryFull ||
		status != ClassNotRecorded && (model < ModelThread || model > ModelTask) {
		return Table{}, 0, fmt.Errorf("inflight: model %d, query %d, status %d: %w", model, h[hQuery], status, ErrNotRequests)
	}
	used := int(le.Uint16(h[hUsed:]))
	if used > slots {
		used = slots
	}
	name := h[hClass : hClass+classLen]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	class, _ := escape(name, classLen)
	t := Table{
		PID:        int(le.Uint32(h[hPID:])),
		StartTicks: le.Uint64(h[hStart:]),
		Class:      class,
		Model:      model,
		Status:     status,
		Slots:      slots,
		Unslotted:  int(le.Uint32(h[hUnslotted:])),
		Unrecorded: le.Uint64(h[hUnrecorded:]),
		Abort:      duration(le.Uint64(h[hAbort:])),
	}
	if status == ClassNotRecorded {
		t.Model = 0
	}
	return t, used, nil
}

// slot is one slot's content.
type slot struct {
	state         uint8
	req           Request
	served        uint64
	last, lastEnd time.Duration
}

var errSlot = errors.New("inflight: slot makes no sense")

// torn reports whether a slot was read while the worker wrote it (its two generations differ).
func torn(b []byte) bool {
	return le.Uint32(b[sGen:]) != le.Uint32(b[sGenTail:])
}

// parseSlot reads one slot of SlotSize bytes.
func parseSlot(b []byte, mode QueryMode) (slot, error) {
	if torn(b) {
		return slot{}, errSlot
	}
	s := slot{state: b[sState], served: le.Uint64(b[sServed:]), last: duration(le.Uint64(b[sLast:]))}
	if s.state > stateCut {
		return slot{}, errSlot
	}
	end := duration(le.Uint64(b[sEnd:]))
	if s.served > 0 {
		s.lastEnd = end
		if s.state == stateInFlight { // the previous request's end is not kept once a new one starts
			s.lastEnd = 0
		}
	}
	if s.state == stateUnused || s.state == stateEnded {
		return s, nil
	}
	ml, al := int(b[sMethodLen]), int(b[sAddrLen])
	pl, ql := int(le.Uint16(b[sPathLen:])), int(le.Uint16(b[sQueryLen:]))
	start := duration(le.Uint64(b[sStart:]))
	if ml > maxMethod || al > maxAddr || pl > maxPath || ql > maxQuery || start == 0 ||
		s.state == stateCut && end != 0 && end < start {
		return slot{}, errSlot
	}
	blob := b[sBlob:]
	method, path, query := blob[:ml], blob[ml+al:ml+al+pl], blob[ml+al+pl:ml+al+pl+ql]
	r := Request{
		PathBytes: max(int(le.Uint32(b[sPathTotal:])), pl),
		Query:     redact(query, mode),
		Start:     start,
		Thread:    le.Uint64(b[sThread:]),
		Task:      le.Uint64(b[sTask:]),
	}
	if s.state == stateCut {
		r.Cut, r.End = true, end
	}
	r.Method, _ = escape(method, maxMethod)
	var cut bool
	r.Path, cut = escape(path, maxPath)
	if !cut && r.PathBytes > pl {
		r.Path += Ellipsis
	}
	r.Remote, _ = escape(blob[ml:ml+al], maxAddr)
	s.req = r
	return s, nil
}

// duration is a count of nanoseconds as a Duration, saturated (the app may write any u64).
func duration(ns uint64) time.Duration {
	if ns > 1<<63-1 {
		return 1<<63 - 1
	}
	return time.Duration(ns)
}
