// Package inflight reads which requests each Gunicorn worker is serving, from the file gwrap's
// Python hook keeps for it: pystack's sitecustomize.py makes DIR/<pid>.req in every worker right
// after the fork, maps it shared, and writes a slot when a request starts and when it ends (the
// method, path, query as --request-query says, remote address, start time, and the thread,
// greenlet or task serving it). gwrap reads it without the worker's help, with bounded preads, so
// it is there after a SIGKILL or an OOM kill, and while a C loop holds the GIL.
//
// The worker writes the file; the app can write anything into it. Read parses it as hostile
// input: every length and count is bounded by the layout, a slot read while the worker wrote it
// is read again (a generation at each end tells), a slot that still makes no sense is counted in
// Table.Bad and dropped, and every string is escaped (control characters, invalid UTF-8,
// non-printing runes) and cut to a bound. A query is shown as the stricter of what the hook
// recorded and what the reader asks for (QueryOff < QueryNames < QueryFull), so a value the
// hook was told not to keep is never shown even if the app planted one.
//
// Use:
//
//	t, err := inflight.ReadFile(hook.RequestsFile(pid), inflight.QueryNames)
//	if err == nil && t.Belongs(pid, startTicks) { for _, r := range t.InFlight { … r.Age(nowMono) … } }
package inflight

// The layout of a request file (little-endian). pystack/sitecustomize.py writes it and documents
// the same offsets; the tests run that writer.
const (
	magic = "GWRQ"
	// Version is the layout's version; a file of another version is not read.
	Version = 1
	// HeaderSize and SlotSize are the sizes of the header and of each slot, in bytes.
	HeaderSize = 128
	SlotSize   = 1024
	// MaxSlots bounds the slots of a file (the hook makes at most 128: gthread's threads).
	MaxSlots = 128
	// MaxFile is the most Read reads of a file.
	MaxFile = HeaderSize + MaxSlots*SlotSize

	// Header fields.
	hVersion    = 4  // u16
	hHeaderSize = 6  // u16
	hSlotSize   = 8  // u16
	hSlots      = 10 // u16
	hPID        = 12 // u32
	hStart      = 16 // u64: the process's start time, clock ticks after boot
	hModel      = 24 // u8
	hQuery      = 25 // u8
	hStatus     = 26 // u8
	hUsed       = 28 // u16: slots used so far
	hUnslotted  = 32 // u32: requests in flight without a slot
	hUnrecorded = 40 // u64: requests never recorded for want of a slot
	hAbort      = 48 // u64: CLOCK_MONOTONIC ns of the worker's SIGABRT handler
	hClass      = 64 // 32 bytes, NUL-padded
	classLen    = 32

	// Slot fields.
	sGen       = 0  // u32, written last
	sState     = 4  // u8
	sEnd       = 8  // u64 CLOCK_MONOTONIC ns
	sServed    = 16 // u64
	sLast      = 24 // u64 ns
	sStart     = 32 // u64 CLOCK_MONOTONIC ns
	sThread    = 40 // u64
	sTask      = 48 // u64
	sMethodLen = 56 // u8
	sAddrLen   = 57 // u8
	sPathLen   = 58 // u16
	sQueryLen  = 60 // u16
	sPathTotal = 64 // u32
	sBlob      = 72
	sGenTail   = SlotSize - 4 // u32, written first

	maxMethod = 16
	maxAddr   = 56
	maxPath   = 640
	maxQuery  = 236
)

// Slot states.
const (
	stateUnused   = 0
	stateInFlight = 1
	stateEnded    = 2
	stateCut      = 3
)

// Model is what serves a request in the worker: a thread (sync, gthread), a greenlet (gevent,
// eventlet) or an asyncio task (Uvicorn, Gunicorn's ASGI worker).
type Model uint8

// Models.
const (
	ModelThread   Model = 1
	ModelGreenlet Model = 2
	ModelTask     Model = 3
)

func (m Model) String() string {
	switch m {
	case ModelThread:
		return "thread"
	case ModelGreenlet:
		return "greenlet"
	case ModelTask:
		return "task"
	}
	return "unknown"
}

// Status says whether the worker records its requests.
type Status uint8

// Statuses.
const (
	// Recording: the worker's app is wrapped; its requests are recorded.
	Recording Status = 0
	// ClassNotRecorded: the worker class is not one whose app gwrap wraps (tornado, a custom one).
	ClassNotRecorded Status = 1
	// AppNotWrapped: the app could not be wrapped safely (an ASGI 2 app, a Uvicorn interface set
	// to asgi2 or wsgi).
	AppNotWrapped Status = 2
)

func (s Status) String() string {
	switch s {
	case Recording:
		return "recording"
	case ClassNotRecorded:
		return "worker class not recorded"
	case AppNotWrapped:
		return "app not wrapped"
	}
	return "unknown"
}
