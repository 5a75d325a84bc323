package memwatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/internal/pread"
)

// WakeReason says what woke the watch.
type WakeReason string

// The notifications Notify turns into wake-ups.
const (
	// WakeThreshold: on v1, memory.usage_in_bytes crossed one of the thresholds registered
	// through cgroup.event_control every Step.
	WakeThreshold WakeReason = "threshold"
	// WakeEvents: on v2, memory.events changed (the limit or memory.high was hit).
	WakeEvents WakeReason = "events"
	// WakePressure: the cgroup's memory.pressure trigger fired (tasks stalled on memory).
	WakePressure WakeReason = "pressure"
	// WakeClimb: the usage, read ten times a second while it is high (v2, which has no usage
	// threshold, or v1 without cgroup.event_control), moved a Step since the last wake-up.
	WakeClimb WakeReason = "climb"
)

// Wake is one notification that the container's memory moved.
type Wake struct {
	Time   time.Time
	Reason WakeReason
	Usage  Value // the usage read when it woke, if it was read
}

// NotifyOptions tune Notify. Zero values take the defaults.
type NotifyOptions struct {
	// Step is how far memory must move to wake (default 5 % of the limit).
	Step uint64
	// PollAbove is the share of the limit above which the usage is read ten times a second
	// where no threshold notification exists (0.4).
	PollAbove float64
	// PollEvery is that reading's period (100 ms).
	PollEvery time.Duration
	// Pressure is the memory.pressure trigger: stalled time within a window, in µs ("some
	// 150000 1000000": 150 ms of some tasks stalled within a second).
	Pressure string
}

// Notifier is a running Notify: Observe tells it the usage the sweep read.
type Notifier struct {
	usage  atomic.Uint64 // the last usage observed, bytes (0: none yet)
	paused atomic.Bool   // the poll loop waits for resume (usage below PollAbove)
	above  atomic.Uint64 // PollAbove in bytes (0: no polling)

	mu     sync.Mutex // guards resume against its close
	resume int        // eventfd: wakes the poll loop (Observe, the end); -1 once closed
}

// Observe tells the notifier the usage a sample read: the ten-a-second reading starts when it is
// above PollAbove of the limit. Safe from any goroutine; it never blocks.
func (n *Notifier) Observe(usage uint64) {
	if n == nil {
		return
	}
	n.usage.Store(usage)
	if a := n.above.Load(); a > 0 && usage >= a && n.paused.Load() {
		n.poke()
	}
}

// poke wakes the poll loop.
func (n *Notifier) poke() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.resume >= 0 {
		var one [8]byte
		one[0] = 1
		_, _ = unix.Write(n.resume, one[:])
	}
}

func (n *Notifier) closeResume() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.resume >= 0 {
		unix.Close(n.resume)
		n.resume = -1
	}
}

// Notify wakes the caller (wake, called on Notify's goroutine; it must not block) when the
// container's memory moves, so that gwrap samples at once instead of at its next sweep, until ctx
// is done. limit is the container's limit (0: none, and nothing to approach: Notify only waits).
//
//   - v1: thresholds on memory.usage_in_bytes through cgroup.event_control, every Step up to
//     the limit, on one eventfd (ladderV1); a crossing wakes when the usage moved half a Step
//     since the last wake-up (crossed). Idle, this costs nothing: the kernel checks thresholds
//     as it charges pages.
//   - v2 (and a hybrid host whose unified hierarchy has the container's own cgroup): inotify on
//     memory.events, and a memory.pressure trigger (Pressure) polled for POLLPRI. v2 has no
//     usage threshold, so while the usage is above PollAbove of the limit, memory.current is also
//     read every PollEvery and a move of Step wakes; below, nothing runs.
//
// What cannot be set up is said once through warn, and what remains works. started, when not
// nil, is called once everything is registered (tests). It returns when ctx is done, with every
// descriptor closed and no goroutine left.
func (c *Cgroup) Notify(ctx context.Context, limit uint64, opt NotifyOptions, wake func(Wake), warn func(string), started func(*Notifier)) {
	if opt.Step == 0 {
		opt.Step = limit / 20
	}
	if opt.PollAbove <= 0 {
		opt.PollAbove = 0.4
	}
	if opt.PollEvery <= 0 {
		opt.PollEvery = 100 * time.Millisecond
	}
	if opt.Pressure == "" {
		opt.Pressure = "some 150000 1000000"
	}
	resume, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		warn(fmt.Sprintf("memory notifications are unavailable (eventfd: %v): memory is sampled once a second", err))
		if started != nil {
			started(nil)
		}
		<-ctx.Done()
		return
	}
	n := &Notifier{resume: resume}
	l := &notifyLoop{c: c, n: n, opt: opt, limit: limit, wake: wake, efd: -1, ufd: -1, ctl: -1, ino: -1, psi: -1}
	defer l.close()
	if limit > 0 && opt.Step > 0 {
		l.setUp(warn)
	}
	if started != nil {
		started(n)
	}
	// A goroutine of its own, blocked in poll(2) (the netpoller does not wait for POLLPRI);
	// ctx's end wakes it through the resume eventfd.
	done := make(chan struct{})
	go func() { defer close(done); l.run(ctx) }()
	<-ctx.Done()
	n.poke()
	<-done
}

// notifyLoop is Notify's state, owned by its goroutine.
type notifyLoop struct {
	c     *Cgroup
	n     *Notifier
	opt   NotifyOptions
	limit uint64
	wake  func(Wake)

	efd, ufd, ctl int    // v1: the thresholds' eventfd, memory.usage_in_bytes, cgroup.event_control
	last          uint64 // v1: the usage at the last wake-up
	muted         uint64 // v1: the ladder leaves out the levels within a Step of this usage (0: none)
	noisySince    time.Time
	noisy         int    // crossings since noisySince that did not move the usage
	ino, psi      int    // v2: inotify on memory.events; the memory.pressure trigger
	usageFile     string // what the climb reading reads (poll): memory.current or memory.usage_in_bytes
	poll          bool   // the usage is read every PollEvery while high
	base          uint64 // the usage at the last wake-up (poll)
	buf           []byte
}

func (l *notifyLoop) setUp(warn func(string)) {
	d := l.c.l.memDir
	if l.c.l.version == 1 {
		l.usageFile = filepath.Join(d, "memory.usage_in_bytes")
		if err := l.ladderV1(0); err != nil {
			warn(fmt.Sprintf("memory thresholds cannot be registered on %s (%v): memory.usage_in_bytes is read ten times a second instead while above %.0f %% of the limit", d, err, l.opt.PollAbove*100))
			l.poll = true
		}
	} else {
		l.usageFile = filepath.Join(d, "memory.current")
		l.poll = true
		if fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK); err == nil {
			if _, err := unix.InotifyAddWatch(fd, filepath.Join(d, "memory.events"), unix.IN_MODIFY|unix.IN_DONT_FOLLOW); err == nil {
				l.ino = fd
			} else {
				unix.Close(fd)
				warn(fmt.Sprintf("memory.events notifications are unavailable on %s (%v)", d, err))
			}
		}
	}
	// The container's own memory.pressure: v2, or the unified hierarchy of a hybrid host when it
	// holds a cgroup of the container's own (its root would be the whole host's).
	if pd := l.c.l.psiDir; pd != "" && (l.c.l.version == 2 || !l.c.l.psiRoot) {
		if fd, err := pressureTrigger(filepath.Join(pd, "memory.pressure"), l.opt.Pressure); err == nil {
			l.psi = fd
		} else if !errors.Is(err, os.ErrNotExist) {
			warn(fmt.Sprintf("a memory.pressure trigger cannot be set on %s (%v): memory pressure is seen at the next sample only", pd, err))
		}
	}
	if l.poll {
		l.n.above.Store(uint64(l.opt.PollAbove * float64(l.limit)))
	}
}

// pressureTrigger registers a PSI trigger ("some 150000 1000000") on a pressure file: the kernel
// signals POLLPRI on the descriptor when it fires, and removes the trigger when it is closed.
func pressureTrigger(path, trigger string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	if _, err := unix.Write(fd, append([]byte(trigger), 0)); err != nil {
		unix.Close(fd)
		return -1, &os.PathError{Op: "write", Path: path, Err: err}
	}
	return fd, nil
}

// ladderV1 registers thresholds on memory.usage_in_bytes every Step from Step up to the limit,
// all on one new eventfd, and closes the previous eventfd (which removes its thresholds). Levels
// within a Step of mute are left out (a level the usage sits on, wobbling across it). The ladder
// is registered once, not moved with the usage: each registration waits for an RCU grace period
// in the kernel (tens of milliseconds), and a climb of a gigabyte a second outruns a pair of
// thresholds re-registered after each crossing.
func (l *notifyLoop) ladderV1(mute uint64) error {
	d := l.c.l.memDir
	if l.ufd < 0 {
		fd, err := unix.Open(filepath.Join(d, "memory.usage_in_bytes"), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		l.ufd = fd
	}
	if l.ctl < 0 {
		fd, err := unix.Open(filepath.Join(d, "cgroup.event_control"), unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		l.ctl = fd
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return err
	}
	for lv := l.opt.Step; lv < l.limit; lv += l.opt.Step {
		if mute > 0 && lv+l.opt.Step > mute && lv < mute+l.opt.Step {
			continue
		}
		line := strconv.Itoa(efd) + " " + strconv.Itoa(l.ufd) + " " + strconv.FormatUint(lv, 10)
		if _, err := unix.Write(l.ctl, []byte(line)); err != nil {
			unix.Close(efd)
			return fmt.Errorf("cgroup.event_control: %w", err)
		}
	}
	if l.efd >= 0 {
		unix.Close(l.efd)
	}
	l.efd, l.muted = efd, mute
	return nil
}

func (l *notifyLoop) readUsage(fd int) (uint64, error) {
	b, err := pread.Whole(fd, l.buf)
	if err != nil {
		return 0, err
	}
	l.buf = b[:0]
	return parseUint(b)
}

// run polls the descriptors until ctx is done.
func (l *notifyLoop) run(ctx context.Context) {
	var drain [4096]byte
	for ctx.Err() == nil {
		fds := []unix.PollFd{{Fd: int32(l.n.resume), Events: unix.POLLIN}}
		if l.efd >= 0 {
			fds = append(fds, unix.PollFd{Fd: int32(l.efd), Events: unix.POLLIN})
		}
		if l.ino >= 0 {
			fds = append(fds, unix.PollFd{Fd: int32(l.ino), Events: unix.POLLIN})
		}
		if l.psi >= 0 {
			fds = append(fds, unix.PollFd{Fd: int32(l.psi), Events: unix.POLLPRI})
		}
		timeout := -1
		if a := l.n.above.Load(); l.poll && a > 0 {
			if u := l.n.usage.Load(); u >= a {
				timeout = int(l.opt.PollEvery / time.Millisecond)
				if l.n.paused.Swap(false) || l.base == 0 {
					l.base = u // the climb is measured from the usage the sweep saw
				}
			} else {
				l.n.paused.Store(true)
			}
		}
		_, err := unix.Poll(fds, timeout)
		if err != nil && err != unix.EINTR {
			return
		}
		if ctx.Err() != nil {
			return
		}
		now := l.c.now()
		for _, p := range fds {
			if p.Revents == 0 {
				continue
			}
			switch int(p.Fd) {
			case l.n.resume:
				_, _ = unix.Read(l.n.resume, drain[:8])
			case l.efd:
				_, _ = unix.Read(l.efd, drain[:8])
				l.crossed(now)
			case l.ino:
				_, _ = unix.Read(l.ino, drain[:])
				l.wake(Wake{Time: now, Reason: WakeEvents, Usage: l.usageNow()})
			case l.psi:
				if p.Revents&unix.POLLPRI != 0 {
					l.wake(Wake{Time: now, Reason: WakePressure, Usage: l.usageNow()})
				}
				if p.Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
					unix.Close(l.psi) // the cgroup is gone
					l.psi = -1
				}
			}
		}
		if l.poll && timeout >= 0 {
			l.climb(now)
		}
	}
}

// crossed takes a threshold crossing: it wakes the caller when the usage moved half a Step or
// more since the last wake-up. A level the usage wobbles across (page cache charged and
// reclaimed around it) wakes the caller once, and when it keeps signalling (noisyLevel times in a
// second) the ladder is registered again without it, until the usage moves two Steps away.
func (l *notifyLoop) crossed(now time.Time) {
	u := l.usageNow()
	if !u.Known {
		return
	}
	if l.last == 0 || u.V >= l.last+l.opt.Step/2 || u.V+l.opt.Step/2 <= l.last {
		l.last = u.V
		l.wake(Wake{Time: now, Reason: WakeThreshold, Usage: u})
		if l.muted > 0 && (u.V >= l.muted+2*l.opt.Step || u.V+2*l.opt.Step <= l.muted) {
			_ = l.ladderV1(0)
		}
		return
	}
	if now.Sub(l.noisySince) > time.Second {
		l.noisySince, l.noisy = now, 0
	}
	if l.noisy++; l.noisy >= noisyLevel && l.muted == 0 {
		_ = l.ladderV1(u.V)
	}
}

// noisyLevel is how many crossings within a second without a move mute a level.
const noisyLevel = 20

// climb reads the usage while it is high and wakes when it moved a Step since the last wake-up.
func (l *notifyLoop) climb(now time.Time) {
	u := l.usageNow()
	if !u.Known {
		return
	}
	l.n.usage.Store(u.V)
	if u.V >= l.base+l.opt.Step || u.V+l.opt.Step <= l.base {
		l.base = u.V
		l.wake(Wake{Time: now, Reason: WakeClimb, Usage: u})
	}
}

func (l *notifyLoop) usageNow() Value {
	if l.usageFile == "" {
		return Value{}
	}
	if l.ufd < 0 {
		fd, err := unix.Open(l.usageFile, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			return Value{}
		}
		l.ufd = fd
	}
	v, err := l.readUsage(l.ufd)
	if err != nil {
		return Value{}
	}
	return Value{V: v, Known: true}
}

func (l *notifyLoop) close() {
	for _, fd := range []int{l.efd, l.ufd, l.ctl, l.ino, l.psi} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	l.n.closeResume()
}
