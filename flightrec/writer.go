package flightrec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/internal/safedir"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// Identity is who wrote a record: one gwrap run on one host.
type Identity struct {
	Host    string    // the container's host name: part of the record's file names
	PID     int       // gwrap's pid
	Version string    // gwrap's version
	Start   time.Time // when gwrap started
}

// DefaultSegmentBytes bounds each of the record's two segments. At 8 workers sampled at 1 Hz
// plus the cgroup (about 1.7 KB a second), one segment holds about two and a half minutes, so
// the record keeps between 2.5 and 5 minutes; on disk it never exceeds 2 × 256 KiB.
const DefaultSegmentBytes = 256 << 10

// minSegmentBytes keeps a segment larger than any one line (a header plus a Gunicorn line).
const minSegmentBytes = 8 << 10

// Options configure a Recorder.
type Options struct {
	Dir          string // the report directory
	Identity     Identity
	Settings     gunicorn.Settings // Gunicorn's effective settings, for the report
	StopBudget   time.Duration     // gwrap's stop budget after TERM/INT/QUIT
	Cgroup       memwatch.Stats    // the start-up sample (cgroup version, CPU quota)
	SegmentBytes int               // 0: DefaultSegmentBytes
	Now          func() time.Time  // nil: time.Now
	Warn         func(msg string)  // said once when the record cannot be kept; nil: silent
	// Refused, when set, is why the directory must not be written at all (a report dir that is
	// a symlink or not a directory): the recorder does nothing and says so once.
	Refused error
}

// Recorder appends to this run's flight record. Its methods are cheap, safe for concurrent
// use, and never fail: when the directory cannot be written the record degrades to nothing and
// that is said once through Options.Warn.
type Recorder struct {
	mu      sync.Mutex
	opt     Options
	names   [2]string
	refused [2]bool // something that is not gwrap's own file is at that segment's name
	active  int     // index into names
	dir     *safedir.Dir
	f       *os.File
	lockf   *os.File // holds the host's flock while the run lasts
	off     int
	seq     uint64
	torn    bool // the last write was short: start the next with a newline
	warned  bool
	closed  bool
	buf     bytes.Buffer
	enc     *json.Encoder
	l       line   // reused for each line
	batch   int    // Batch calls running: lines wait in pending
	pend    []byte // encoded lines not yet written (counted in off)
}

// Open starts this run's record for Options.Identity.Host in Options.Dir, replacing the previous
// record of the same host: read that one first (Previous). It never fails; see Recorder.
//
// The directory may be writable by the app's user (a shared volume): every file is opened
// relative to one descriptor of it, never through a symlink, never blocking on a FIFO, and used
// only when it is gwrap's own regular file (package safedir). Something else at a segment's name,
// at start or swapped in during the run, is refused and said once, and the record goes on in the
// other segment alone; at the lock's name, the record goes on without the lock.
func Open(opt Options) *Recorder {
	if opt.SegmentBytes == 0 {
		opt.SegmentBytes = DefaultSegmentBytes
	}
	opt.SegmentBytes = max(opt.SegmentBytes, minSegmentBytes)
	if opt.Now == nil {
		opt.Now = time.Now
	}
	r := &Recorder{opt: opt, names: segmentNames(opt.Dir, opt.Identity.Host)}
	r.enc = json.NewEncoder(&r.buf)
	r.enc.SetEscapeHTML(false)
	r.mu.Lock()
	defer r.mu.Unlock()
	if opt.Refused != nil {
		r.fail(opt.Refused)
		return r
	}
	if err := os.MkdirAll(opt.Dir, 0o750); err != nil {
		r.fail(fmt.Errorf("creating %s: %w", opt.Dir, err))
		return r
	}
	d, err := safedir.Open(opt.Dir)
	if err != nil {
		r.fail(err)
		return r
	}
	r.dir = d
	lf, busy, err := lock(d, filepath.Base(lockName(opt.Dir, opt.Identity.Host)))
	switch {
	case busy:
		r.fail(fmt.Errorf("another live gwrap with host name %q keeps its record in %s", opt.Identity.Host, opt.Dir))
		return r
	case errors.Is(err, safedir.ErrRefused):
		r.warn(err.Error() + "; the flight record goes on without its lock")
	case err != nil:
		r.fail(err)
		return r
	}
	r.lockf = lf
	// The other segment still holds the previous run: empty it, so that a reader never mixes runs.
	if f, _, err := d.OpenOwn(filepath.Base(r.names[1]), os.O_WRONLY, 0); err == nil {
		err = f.Truncate(0)
		f.Close()
		if err != nil {
			r.fail(fmt.Errorf("truncating %s: %w", r.names[1], err))
			return r
		}
	} else if errors.Is(err, safedir.ErrRefused) {
		r.refuse(1, err)
	} else if !errors.Is(err, fs.ErrNotExist) {
		r.fail(fmt.Errorf("truncating %s: %w", r.names[1], err))
		return r
	}
	r.startSegment(0)
	return r
}

// startSegment truncates segment i, makes it the active one and writes its header. A segment
// whose name holds something that is not gwrap's own file is refused (said once) and the other
// one is used in its place: the record then keeps one segment's history instead of two.
func (r *Recorder) startSegment(i int) {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
	for _, j := range []int{i, 1 - i} {
		if r.refused[j] {
			continue
		}
		f, _, err := r.dir.OpenOwn(filepath.Base(r.names[j]), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if errors.Is(err, safedir.ErrRefused) {
			r.refuse(j, err)
			continue
		}
		if err == nil {
			if err = f.Truncate(0); err != nil {
				f.Close()
			}
		}
		if err != nil {
			r.fail(fmt.Errorf("opening %s: %w", r.names[j], err))
			return
		}
		r.f, r.active, r.off, r.torn = f, j, 0, false
		r.header()
		return
	}
	r.fail(fmt.Errorf("neither segment can be used in %s", r.opt.Dir))
}

// refuse marks segment i unusable and says so once.
func (r *Recorder) refuse(i int, err error) {
	if r.refused[i] {
		return
	}
	r.refused[i] = true
	r.warn(err.Error() + "; the flight record goes on without it")
}

// header writes the active segment's header line.
func (r *Recorder) header() {
	r.reset(kindHeader, r.opt.Now())
	id, s, l := r.opt.Identity, r.opt.Settings, &r.l
	l.Host, l.PID, l.Version, l.Start = id.Host, id.PID, id.Version, ms(id.Start)
	l.StopBudget = r.opt.StopBudget.Milliseconds()
	l.GTimeout, l.GGraceful, l.GWorkers, l.GClass, l.GThreads, l.GMaxReq, l.GPreload =
		s.Timeout, s.GracefulTimeout, s.Workers, s.WorkerClass, s.Threads, s.MaxRequests, s.PreloadApp
	l.CgroupVer = r.opt.Cgroup.Version
	if q := r.opt.Cgroup.CPUQuota; q.Known {
		l.CPUQuotaMil = int64(q.V * 1000)
	}
	r.emit()
}

// warn says something through Options.Warn (a degraded part of the record, not its end).
func (r *Recorder) warn(msg string) {
	if r.opt.Warn != nil {
		r.opt.Warn("flight record: " + msg)
	}
}

// fail says once that the record cannot be kept.
func (r *Recorder) fail(err error) {
	if r.warned {
		return
	}
	r.warned = true
	if r.opt.Warn != nil {
		r.opt.Warn("cannot keep the flight record: " + err.Error() + "; if the whole container is killed (a group OOM kill, a stop deadline), the next start cannot explain it")
	}
}

// reset prepares r.l for a new line.
func (r *Recorder) reset(kind string, t time.Time) {
	r.l = line{K: kind, T: ms(t)}
}

// emit numbers, encodes and appends r.l, rotating first when it would overflow the segment;
// inside a Batch the line waits in pend.
func (r *Recorder) emit() {
	if r.f == nil {
		return
	}
	if !r.encode() {
		return
	}
	if r.off+r.buf.Len() > r.opt.SegmentBytes && r.l.K != kindHeader {
		saved := r.l
		r.flush()
		r.startSegment(1 - r.active) // writes the new segment's header
		if r.f == nil {
			return
		}
		r.l = saved
		if !r.encode() {
			return
		}
	}
	r.pend = append(r.pend, r.buf.Bytes()...)
	r.off += r.buf.Len()
	if r.batch == 0 || (r.l.K != kindWorker && r.l.K != kindContainer) {
		r.flush() // only samples wait for the batch's end: a signal, a line or an event goes out at once
	}
}

// flush appends the pending lines to the active segment in one write.
func (r *Recorder) flush() {
	if len(r.pend) == 0 || r.f == nil {
		r.pend = r.pend[:0]
		return
	}
	n, err := r.f.Write(r.pend)
	r.off -= len(r.pend) - n
	r.torn = n > 0 && n < len(r.pend)
	if err != nil {
		r.fail(fmt.Errorf("writing %s: %w", r.names[r.active], err))
	}
	r.pend = r.pend[:0]
}

// Batch runs f and appends the samples recorded meanwhile (from any goroutine) in one write when
// it returns: gwrap records a sweep's samples so, one write a second instead of one a sample.
// Any other line (an event, a Gunicorn line, a signal, an OOM kill) is written at once, with the
// samples before it, in order. A kill during f loses only samples of that sweep.
func (r *Recorder) Batch(f func()) {
	r.mu.Lock()
	r.batch++
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.batch--; r.batch == 0 {
			r.flush()
		}
	}()
	f()
}

// encode numbers r.l and encodes it into r.buf as one line.
func (r *Recorder) encode() bool {
	r.seq++
	r.l.N = r.seq
	r.buf.Reset()
	if r.torn {
		r.buf.WriteByte('\n')
		r.torn = false
	}
	if err := r.enc.Encode(&r.l); err != nil {
		r.fail(fmt.Errorf("encoding a %s line: %w", r.l.K, err))
		return false
	}
	return true
}

// Container records a cgroup sample.
func (r *Recorder) Container(st memwatch.Stats) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return
	}
	r.reset(kindContainer, st.Time)
	l := &r.l
	// The pointers point into the Stats copy, which lives until emit returns.
	opt := func(v *memwatch.Value) *uint64 {
		if !v.Known {
			return nil
		}
		return &v.V
	}
	l.Usage, l.WS, l.Limit, l.Anon, l.Swap = opt(&st.Usage), opt(&st.WorkingSet), opt(&st.Limit), opt(&st.Anon), opt(&st.Swap)
	l.OOMKill, l.OOMGroup, l.Throttled, l.CPUUsage = opt(&st.OOMKill), opt(&st.OOMGroup), opt(&st.CPUThrottled), opt(&st.CPUUsage)
	if st.PSI.Known {
		l.MemPSI, l.PSIHost = &st.PSI.MemorySome10, st.PSI.HostWide
	}
	r.emit()
}

// Worker records a worker's hot sample and the requests it was serving then (at most maxReqs,
// each field bounded).
func (r *Recorder) Worker(id probes.ID, s probes.Sample, serving ...postmortem.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return
	}
	r.reset(kindWorker, s.Time)
	r.sample(id, s)
	for i, q := range serving {
		if i == maxReqs {
			break
		}
		r.l.Reqs = append(r.l.Reqs, reqLine{M: bounded(q.Method, maxMethod), P: bounded(q.Path, maxPath), Q: bounded(q.Query, maxQuery),
			R: bounded(q.Remote, maxRemote), A: int64(q.AgeSeconds * 1000)})
	}
	r.emit()
}

func (r *Recorder) sample(id probes.ID, s probes.Sample) {
	l := &r.l
	l.W, l.WStart = id.PID, id.StartTime
	l.RA, l.RF, l.RS, l.SW = s.RSSAnon, s.RSSFile, s.RSSShmem, s.Swap
	l.CU, l.CS, l.State, l.Thr = s.CPUUser, s.CPUSystem, s.State, s.Threads
	l.MajFlt, l.RunDelay, l.Beats, l.Missing = s.MajorFaults, s.RunDelayPct, s.Heartbeats, s.Missing
	l.HB = -1
	if s.HeartbeatAge >= 0 {
		l.HB = s.HeartbeatAge.Milliseconds()
	}
}

// Event records a worker event with the sample it carries.
func (r *Recorder) Event(ev probes.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return
	}
	r.reset(kindEvent, ev.Time)
	r.sample(ev.ID, ev.Sample)
	r.l.Event, r.l.Share, r.l.TimeoutMS = string(ev.Kind), ev.Share, ev.Timeout.Milliseconds()
	if ev.Deep != nil {
		r.l.Waiting = ev.Deep.WaitingOn()
	}
	r.emit()
}

// Records reports whether Gunicorn records this line: those about a worker's end (timeout,
// signal, exit, graceful timeout).
func Records(ev gunicorn.Event) bool {
	switch ev.Kind {
	case gunicorn.KindTimeout, gunicorn.KindSignaled, gunicorn.KindExited, gunicorn.KindGracefulTimeout, gunicorn.KindReason:
		return true
	}
	return false
}

// Gunicorn records the lines about a worker's end (Records); it ignores the others.
func (r *Recorder) Gunicorn(ev gunicorn.Event) {
	if !Records(ev) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return
	}
	r.reset(kindLine, r.opt.Now())
	r.l.W = ev.WorkerPID
	r.l.Text = truncate(ev.Line, maxText)
	r.emit()
}

// Signal records a signal gwrap received (and whether it was forwarded to Gunicorn), by the
// name every event gives it (SIGTERM).
func (r *Recorder) Signal(sig os.Signal, forwarded bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return
	}
	r.reset(kindSignal, r.opt.Now())
	r.l.Sig, r.l.Fwd = signalName(sig), forwarded
	r.emit()
}

// OOM records an OOM-kill notification.
func (r *Recorder) OOM(ev memwatch.OOMEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return
	}
	r.reset(kindOOM, ev.Time)
	r.l.Count, r.l.Total = ev.Count, ev.Total
	r.emit()
}

// Close marks the record closed: gwrap exited on its own, so the next start has nothing to
// explain. Later calls are no-ops. The error is for tests; gwrap has already said it once.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	var err error
	if r.f != nil {
		r.reset(kindClose, r.opt.Now())
		r.emit()
		r.flush() // also when Close comes during a Batch
		err = r.f.Close()
		r.f = nil
	}
	if r.lockf != nil {
		r.lockf.Close() // releases the flock
	}
	if r.dir != nil {
		r.dir.Close()
	}
	if err != nil {
		return fmt.Errorf("closing the flight record: %w", err)
	}
	return nil
}

// Files are the record's segment files for host in dir (for tests and for measuring its size).
func Files(dir, host string) []string {
	n := segmentNames(dir, host)
	return n[:]
}

// signalName is SIGTERM for syscall.SIGTERM; another os.Signal by its own word.
func signalName(sig os.Signal) string {
	if s, ok := sig.(syscall.Signal); ok {
		if n := unix.SignalName(s); n != "" {
			return n
		}
	}
	return sig.String()
}

// oldSignalName reads a signal as a gwrap before issue 23 recorded it, in Go's words
// ("terminated"): the name it has today (SIGTERM); a name it does not know stays as it is.
func oldSignalName(name string) string {
	for s := syscall.Signal(1); s < 32; s++ {
		if s.String() == name {
			return signalName(s)
		}
	}
	return name
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
