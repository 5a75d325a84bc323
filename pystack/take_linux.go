package pystack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Take asks the process for every thread's Python stack and waits for the whole dump; ctx bounds
// the wait (a worker in uninterruptible sleep takes the signal only when it wakes). It sends the
// signal only when /proc says the process catches it and its main thread does not block it:
// otherwise the default action of a real-time signal would kill the worker. Take is synchronous
// and safe for concurrent use; a second Take of the same pid while one runs fails at once.
//
// Reads /proc/<pid>/status and /proc/<pid>/fd, writes and reads <StackDir>/<pid>.stack.
func (h *Hook) Take(ctx context.Context, pid int) (Stack, error) {
	if !h.claim(pid) {
		return Stack{}, fmt.Errorf("pystack: pid %d: a stack is already being taken", pid)
	}
	defer h.release(pid)

	file := h.stackFile(pid)
	if err := h.hooked(pid, file); err != nil {
		return Stack{}, err
	}
	st, err := h.status(pid)
	if err != nil {
		return Stack{}, err
	}
	switch {
	case !has(st.Cgt, h.sig):
		return Stack{}, fmt.Errorf("pystack: pid %d: %w (signal %d)", pid, ErrNotCaught, h.sig)
	case has(st.Blk, h.sig):
		return Stack{}, fmt.Errorf("pystack: pid %d: %w (signal %d)", pid, ErrBlocked, h.sig)
	case has(st.Pnd, h.sig) || has(st.ShdPnd, h.sig):
		return Stack{}, fmt.Errorf("pystack: pid %d: a stack signal is still pending (state %c): %w", pid, st.State, ErrTimeout)
	}
	if err := truncate(file); err != nil {
		return Stack{}, fmt.Errorf("pystack: pid %d: %w", pid, err)
	}
	// To the main thread: it is last in faulthandler's thread list and the one that runs the
	// request of a sync worker and the event loop of gevent and Uvicorn.
	if err := unix.Tgkill(pid, pid, h.sig); err != nil {
		switch {
		case errors.Is(err, unix.ESRCH):
			return Stack{}, fmt.Errorf("pystack: pid %d: %w", pid, ErrGone)
		case errors.Is(err, unix.EPERM):
			return Stack{}, fmt.Errorf("pystack: pid %d: %w: %v", pid, ErrPermission, err)
		}
		return Stack{}, fmt.Errorf("pystack: pid %d: tgkill: %w", pid, err)
	}
	if err := h.waitDump(ctx, pid, file); err != nil {
		return Stack{}, err
	}
	b, err := readBounded(file)
	if err != nil {
		return Stack{}, fmt.Errorf("pystack: pid %d: %w", pid, err)
	}
	stack, err := Parse(b)
	if err != nil {
		return Stack{}, fmt.Errorf("pystack: pid %d: %w: %w", pid, ErrEmpty, err)
	}
	stack.PID = pid
	return stack, nil
}

// truncate empties a dump file through a descriptor of it (never through a symlink).
func truncate(file string) error {
	f, err := openRegular(file, unix.O_WRONLY)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(0)
}

// waitDump polls until the dump is complete: the file is not empty (the handler has started, so
// the kernel has blocked the signal in the thread) and the signal is neither pending nor blocked
// any more (the handler has returned). Polls every 200 µs, backing off to 5 ms.
func (h *Hook) waitDump(ctx context.Context, pid int, file string) error {
	wait := 200 * time.Microsecond
	var last sigState
	for {
		fi, err := os.Lstat(file)
		if err != nil {
			return fmt.Errorf("pystack: pid %d: %w", pid, err)
		}
		st, err := h.status(pid)
		if errors.Is(err, ErrGone) {
			if fi.Size() > 0 {
				return nil // exited right after dumping (or while): Parse keeps what is whole
			}
			return err
		}
		if err != nil {
			return err
		}
		last = st
		if fi.Size() > 0 && !has(st.Blk, h.sig) && !has(st.Pnd, h.sig) && !has(st.ShdPnd, h.sig) {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("pystack: pid %d: %w (state %c, %d bytes so far): %w", pid, ErrTimeout, last.State, fi.Size(), ctx.Err())
		case <-t.C:
		}
		if wait < 5*time.Millisecond {
			wait *= 2
		}
	}
}

// hooked checks that the process loaded the hook: its <pid>.stack exists and, where /proc lets
// gwrap see it, the process holds it open (a file left by an earlier process with the same pid
// does not count). A <pid>.err written by the hook gives the reason it could not.
func (h *Hook) hooked(pid int, file string) error {
	if _, err := os.Stat(file); err != nil {
		if b, rerr := os.ReadFile(h.errFile(pid)); rerr == nil && len(b) > 0 {
			return fmt.Errorf("pystack: pid %d: %w: %s", pid, ErrNoHook, strings.TrimSpace(string(b)))
		}
		if _, serr := os.Stat(filepath.Join(h.procRoot, strconv.Itoa(pid))); serr != nil {
			return fmt.Errorf("pystack: pid %d: %w", pid, ErrGone)
		}
		return fmt.Errorf("pystack: pid %d: %w (not a Python that reads PYTHONPATH, or started with -E/-I/-S)", pid, ErrNoHook)
	}
	fdDir := filepath.Join(h.procRoot, strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pystack: pid %d: %w", pid, ErrGone)
		}
		return nil // another user's process without ptrace access: SigCgt still guards the signal
	}
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil && target == file {
			return nil
		}
	}
	return fmt.Errorf("pystack: pid %d: %w (it does not hold %s open)", pid, ErrNoHook, filepath.Base(file))
}

func (h *Hook) status(pid int) (sigState, error) {
	b, err := os.ReadFile(filepath.Join(h.procRoot, strconv.Itoa(pid), "status"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return sigState{}, fmt.Errorf("pystack: pid %d: %w", pid, ErrGone)
		}
		return sigState{}, fmt.Errorf("pystack: pid %d: %w", pid, err)
	}
	st, err := parseStatus(b)
	if err != nil {
		return sigState{}, fmt.Errorf("pystack: pid %d: %w", pid, err)
	}
	if st.State == 'Z' || st.State == 'X' {
		return sigState{}, fmt.Errorf("pystack: pid %d: %w (state %c)", pid, ErrGone, st.State)
	}
	return st, nil
}

func (h *Hook) claim(pid int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.busy[pid] {
		return false
	}
	h.busy[pid] = true
	return true
}

func (h *Hook) release(pid int) {
	h.mu.Lock()
	delete(h.busy, pid)
	h.mu.Unlock()
}

// Loaded reports whether pid loaded the hook and catches the stack signal, without signalling
// it: call it once for the Gunicorn master after its first worker booted, and say once why not
// (a command that is not Python, python -I/-E/-S, a Python older than 3.7, the signal in use).
func (h *Hook) Loaded(pid int) error {
	if err := h.hooked(pid, h.stackFile(pid)); err != nil {
		return err
	}
	st, err := h.status(pid)
	if err != nil {
		return err
	}
	if !has(st.Cgt, h.sig) {
		return fmt.Errorf("pystack: pid %d: %w (signal %d)", pid, ErrNotCaught, h.sig)
	}
	return nil
}
