// Package asuser acts with another process's rights instead of gwrap's: gwrap is usually root,
// and what an app's process names (a frame's source file, its Gunicorn config file) must be read
// or run with no more rights than that process has, or root reads for the app what the app cannot.
//
// Cred is a process's user, group and supplementary groups, read from /proc/<pid>/status. Do runs
// a function on an OS thread of its own whose file-system identity (fsuid, fsgid, groups) is that
// Cred: the kernel then checks every open the function makes as it would for the process, and
// the thread's file-system capabilities (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, …) are dropped with
// the change of fsuid. The thread is never given back to the Go runtime: it ends with the
// function. Do also bounds the function's time; a function stuck past its deadline (a hung file
// system) is left to finish on its own, and at most a few may be outstanding at once.
// Cred.SysProcAttr is the same identity for a command gwrap runs (os/exec).
package asuser

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Cred is a process's effective user and group and its supplementary groups.
type Cred struct {
	UID, GID uint32
	Groups   []uint32
}

// String is "uid 65534 gid 65534 groups []".
func (c Cred) String() string { return fmt.Sprintf("uid %d gid %d groups %v", c.UID, c.GID, c.Groups) }

// Equal reports whether c and o are the same identity (groups in any order).
func (c Cred) Equal(o Cred) bool {
	if c.UID != o.UID || c.GID != o.GID || len(c.Groups) != len(o.Groups) {
		return false
	}
	a, b := slices.Clone(c.Groups), slices.Clone(o.Groups)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// SysProcAttr is c as the credentials of a command to start (exec.Cmd.SysProcAttr.Credential).
func (c Cred) SysProcAttr() *syscall.Credential {
	return &syscall.Credential{Uid: c.UID, Gid: c.GID, Groups: slices.Clone(c.Groups)}
}

// Self is gwrap's own identity.
func Self() Cred {
	c := Cred{UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())}
	gs, _ := os.Getgroups()
	for _, g := range gs {
		c.Groups = append(c.Groups, uint32(g))
	}
	return c
}

// Of reads process pid's identity from <procRoot>/<pid>/status.
func Of(procRoot string, pid int) (Cred, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "status"))
	if err != nil {
		return Cred{}, fmt.Errorf("the credentials of process %d: %w", pid, err)
	}
	c, err := ParseStatus(b)
	if err != nil {
		return Cred{}, fmt.Errorf("the credentials of process %d: %w", pid, err)
	}
	return c, nil
}

// ParseStatus reads the effective uid and gid (the second of the four ids on the Uid: and Gid:
// lines) and the Groups: line of a /proc/<pid>/status. Each of the three must be there.
func ParseStatus(b []byte) (Cred, error) {
	var c Cred
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		f := bytes.Fields(v)
		switch string(k) {
		case "Uid", "Gid":
			if len(f) != 4 {
				return Cred{}, fmt.Errorf("status: %s: %q is not four ids", k, v)
			}
			n, err := strconv.ParseUint(string(f[1]), 10, 32)
			if err != nil {
				return Cred{}, fmt.Errorf("status: %s: %w", k, err)
			}
			if k[0] == 'U' {
				c.UID = uint32(n)
			} else {
				c.GID = uint32(n)
			}
			seen++
		case "Groups":
			for _, g := range f {
				n, err := strconv.ParseUint(string(g), 10, 32)
				if err != nil {
					return Cred{}, fmt.Errorf("status: Groups: %w", err)
				}
				c.Groups = append(c.Groups, uint32(n))
			}
			seen++
		}
	}
	if seen != 3 {
		return Cred{}, fmt.Errorf("status: %d of Uid, Gid, Groups found", seen)
	}
	return c, nil
}

// Errors of Do.
var (
	ErrCannotSwitch = errors.New("cannot take on the process's identity")
	ErrBusy         = errors.New("earlier reads with another identity are still stuck")
)

// outstanding bounds the functions Do has running (stuck ones included).
var outstanding = make(chan struct{}, 4)

// Do runs f with c's file-system identity on a thread of its own and returns its error, or ctx's
// error when ctx ends first (f then runs on to its end unobserved: it must own everything it
// opens). When c is gwrap's own identity f runs with gwrap's rights, still under ctx. When gwrap
// cannot take on c (it is not root), f does not run: ErrCannotSwitch.
func Do(ctx context.Context, c Cred, f func() error) error {
	same := c.Equal(Self())
	select {
	case outstanding <- struct{}{}:
	default:
		return ErrBusy
	}
	done := make(chan error, 1)
	go func() {
		defer func() { <-outstanding }()
		if !same {
			// Never unlocked: the thread with another identity ends with this goroutine.
			runtime.LockOSThread()
			if err := become(c); err != nil {
				done <- err
				return
			}
		}
		done <- f()
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// become gives the calling thread c's groups, fsgid and fsuid, and checks that it took them.
// setfsuid drops the thread's file-system capabilities when the fsuid leaves 0.
func become(c Cred) error {
	gids := make([]int, len(c.Groups))
	for i, g := range c.Groups {
		gids[i] = int(g)
	}
	if err := unix.Setgroups(gids); err != nil { // this thread only (x/sys: a raw setgroups)
		return fmt.Errorf("%w (%s): setgroups: %w", ErrCannotSwitch, c, err)
	}
	unix.SetfsgidRetGid(int(c.GID))
	if got, _ := unix.SetfsgidRetGid(-1); got != int(c.GID) {
		return fmt.Errorf("%w (%s): fsgid is %d", ErrCannotSwitch, c, got)
	}
	unix.SetfsuidRetUid(int(c.UID))
	if got, _ := unix.SetfsuidRetUid(-1); got != int(c.UID) {
		return fmt.Errorf("%w (%s): fsuid is %d", ErrCannotSwitch, c, got)
	}
	return nil
}
