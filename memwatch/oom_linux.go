package memwatch

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	"golang.org/x/sys/unix"
)

// pollEvery is the fallback when notifications are unavailable: the oom_kill counter is read this
// often. With notifications it is still read every safetyPoll, in case one is missed.
const (
	pollEvery  = time.Second
	safetyPoll = 10 * time.Second
)

// WatchOOM emits an OOMEvent each time the cgroup's oom_kill counter moves, until ctx is done.
// Notifications wake it within milliseconds (v1: an eventfd on memory.oom_control; v2: inotify
// on memory.events); the counter is also polled, every 10 s (every second without
// notifications). The notification comes before the kill is counted (the v1 eventfd fires as
// the cgroup enters OOM, before the killer has chosen; TestRealOOMKillCountedBeforeTheReaping
// measures it), so after a wake-up the counter is re-read every 5 ms until it moves, for up to
// two seconds; a wake-up whose counter never moves (rmdir of the cgroup also signals the
// eventfd) emits nothing. Each event says when
// the counter was last seen unmoved (OOMEvent.After): with a notification, a few milliseconds
// before the move, or the read before the notification when the first read after it already
// saw the move (then OOMEvent.Woke says when the notification came); when only the poll saw it,
// up to 10 s. When no notification
// can be set up (not root, no eventfd support) it says so once through warn and keeps polling. It
// returns when ctx is done, with the notification fd closed and no goroutine left.
func (c *Cgroup) WatchOOM(ctx context.Context, emit func(OOMEvent), warn func(string)) {
	counter := c.oomKillFile()
	lastRead := c.now()
	last, _ := readCounter(counter)
	woke := make(chan time.Time, 1) // when the first notification not yet acted on came
	every := safetyPoll
	if wake, closer, err := c.notifier(); err != nil {
		every = pollEvery
		if warn != nil {
			warn(fmt.Sprintf("OOM notifications for %s are unavailable (%v): the oom_kill counter is polled every %v instead", c.l.memDir, err, pollEvery))
		}
	} else {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for wake() == nil {
				select {
				case woke <- c.now():
				default:
				}
			}
		}()
		defer func() { closer(); <-done }()
	}

	tick := time.NewTicker(every)
	defer tick.Stop()
	if c.watching != nil {
		c.watching()
	}
	check := func(wait time.Duration, woke time.Time) {
		deadline := time.Now().Add(wait)
		for {
			// The counter held its old value at some instant after before, and its new one by
			// the time read returned: the move (and the kill right after it) lies in between.
			before := c.now()
			v, ok := readCounter(counter)
			if ok && v > last {
				emit(OOMEvent{Time: c.now(), After: lastRead, Woke: woke, Count: v - last, Total: v})
				last, lastRead = v, before
				return
			}
			if ok {
				lastRead = before
			}
			if ok && v < last {
				last = v // the cgroup was recreated
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case at := <-woke:
			check(2*time.Second, at)
		case <-tick.C:
			check(0, time.Time{})
		}
	}
}

func (c *Cgroup) oomKillFile() string {
	if c.l.version == 1 {
		return filepath.Join(c.l.memDir, "memory.oom_control")
	}
	return filepath.Join(c.l.memDir, "memory.events")
}

// readCounter reads oom_kill from memory.oom_control (v1) or memory.events (v2).
func readCounter(path string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	v, ok := parseKV(b)["oom_kill"]
	return v, ok
}

// notifier returns a blocking wait for the next notification and a function that ends it.
func (c *Cgroup) notifier() (wait func() error, closer func(), err error) {
	var f *os.File
	if c.l.version == 1 {
		f, err = c.eventfdV1()
	} else {
		f, err = c.inotifyV2()
	}
	if err != nil {
		return nil, nil, err
	}
	buf := make([]byte, 4096)
	wait = func() error {
		_, err := f.Read(buf)
		return err
	}
	return wait, func() { f.Close() }, nil
}

// eventfdV1 registers an eventfd for OOM notifications on memory.oom_control, through
// containerd/cgroups (a memory-only hierarchy rooted where the memory controller is mounted, with
// a static path: its own path helpers fail under Docker's layout).
func (c *Cgroup) eventfdV1() (*os.File, error) {
	top := c.l.memTop
	rel, err := filepath.Rel(top, c.l.memDir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("memory cgroup %s is not under %s", c.l.memDir, top)
	}
	root := filepath.Dir(top)
	mem := cgroup1.NewMemory(root)
	if filepath.Base(top) != "memory" {
		return nil, fmt.Errorf("memory controller mounted at %s, not <root>/memory", top)
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath("/"+rel), cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) {
		return []cgroup1.Subsystem{mem}, nil
	}))
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", c.l.memDir, err)
	}
	efd, err := cg.OOMEventFD()
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(int(efd), true); err != nil {
		unix.Close(int(efd))
		return nil, err
	}
	return os.NewFile(efd, "oom-eventfd"), nil
}

// inotifyV2 watches memory.events for modification. containerd/cgroups' EventChan is not used:
// it has no way to stop it (its goroutine and fd live until the cgroup empties).
func (c *Cgroup) inotifyV2() (*os.File, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if _, err := unix.InotifyAddWatch(fd, filepath.Join(c.l.memDir, "memory.events"), unix.IN_MODIFY); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "memory.events-inotify"), nil
}
