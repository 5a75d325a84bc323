package pystack

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

//go:embed sitecustomize.py
var sitecustomize []byte

// Environment variables the hook reads in the child.
const (
	EnvDir    = "GWRAP_STACK_DIR"    // the directory of the per-pid files
	EnvSignal = "GWRAP_STACK_SIGNAL" // the real-time signal number faulthandler is registered on
)

// DefaultSignal is the signal stacks are asked with: SIGRTMIN+26 for glibc (whose SIGRTMIN is 34),
// far from the low real-time signals libraries pick, and one Gunicorn never resets.
const DefaultSignal = syscall.Signal(60)

// Errors of Take; each says why there is no stack. Errors wrap one of them.
var (
	ErrNoHook     = errors.New("the process did not load gwrap's stack hook")
	ErrNotCaught  = errors.New("the stack signal is not handled by the process")
	ErrBlocked    = errors.New("the process blocks the stack signal")
	ErrPermission = errors.New("not allowed to signal the process")
	ErrGone       = errors.New("the process is gone")
	ErrTimeout    = errors.New("the process did not dump its stack in time")
	ErrEmpty      = errors.New("the dump holds no stack")
)

// Hook is gwrap's side of the stack hook: the private directory, the signal, the /proc root.
type Hook struct {
	dir      string
	sig      syscall.Signal
	procRoot string

	mu   sync.Mutex
	busy map[int]bool
}

// Options tune Install; zero values take the defaults.
type Options struct {
	Parent   string         // where the private directory is made (default os.TempDir())
	Signal   syscall.Signal // DefaultSignal
	ProcRoot string         // /proc
}

// Install makes a private directory (mode 0700) under opt.Parent and writes the hook into it.
// Close removes it.
func Install(opt Options) (*Hook, error) {
	if opt.Signal == 0 {
		opt.Signal = DefaultSignal
	}
	if opt.ProcRoot == "" {
		opt.ProcRoot = "/proc"
	}
	if opt.Signal < 32 || opt.Signal > 64 {
		return nil, fmt.Errorf("pystack: signal %d is not a real-time signal", opt.Signal)
	}
	dir, err := os.MkdirTemp(opt.Parent, "gwrap-pystack-")
	if err != nil {
		return nil, fmt.Errorf("pystack: private directory: %w", err)
	}
	// The real path: Take compares it with what /proc/<pid>/fd links to (TMPDIR may be a symlink).
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	h := &Hook{dir: dir, sig: opt.Signal, procRoot: opt.ProcRoot, busy: map[int]bool{}}
	if err := os.Mkdir(h.StackDir(), 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pystack: %w", err)
	}
	if err := os.WriteFile(filepath.Join(h.PathDir(), "sitecustomize.py"), sitecustomize, 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pystack: write the hook: %w", err)
	}
	return h, nil
}

// PathDir is the directory Env puts first on PYTHONPATH (it holds only sitecustomize.py).
func (h *Hook) PathDir() string { return h.dir }

// StackDir is where every hooked process writes <pid>.stack (and <pid>.err when it cannot).
func (h *Hook) StackDir() string { return filepath.Join(h.dir, "stacks") }

// Signal is the signal Take sends.
func (h *Hook) Signal() syscall.Signal { return h.sig }

// Close removes the private directory and everything in it.
func (h *Hook) Close() error {
	if err := os.RemoveAll(h.dir); err != nil {
		return fmt.Errorf("pystack: remove %s: %w", h.dir, err)
	}
	return nil
}

// Env returns environ (KEY=VALUE pairs, e.g. os.Environ()) with the hook's directory first on
// PYTHONPATH and GWRAP_STACK_DIR, GWRAP_STACK_SIGNAL set: the child's environment.
func (h *Hook) Env(environ []string) []string {
	return withHookEnv(environ, h.PathDir(), h.StackDir(), h.sig)
}

func withHookEnv(environ []string, pathDir, stackDir string, sig syscall.Signal) []string {
	out := make([]string, 0, len(environ)+3)
	pp := pathDir
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "PYTHONPATH":
			if v != "" {
				pp = pathDir + string(os.PathListSeparator) + v
			}
		case EnvDir, EnvSignal:
		default:
			out = append(out, kv)
		}
	}
	return append(out, "PYTHONPATH="+pp, EnvDir+"="+stackDir, EnvSignal+"="+strconv.Itoa(int(sig)))
}

// Forget removes the files of a process that is gone; call it once its report is written.
func (h *Hook) Forget(pid int) {
	os.Remove(h.stackFile(pid))
	os.Remove(h.errFile(pid))
}

func (h *Hook) stackFile(pid int) string {
	return filepath.Join(h.StackDir(), strconv.Itoa(pid)+".stack")
}

func (h *Hook) errFile(pid int) string {
	return filepath.Join(h.StackDir(), strconv.Itoa(pid)+".err")
}

// Crash returns the stack a crashed process dumped (faulthandler's "Fatal Python error: …"), if it
// left one. Call it when a worker died of a signal, before Forget.
func (h *Hook) Crash(pid int) (Stack, bool) {
	b, err := readBounded(h.stackFile(pid))
	if err != nil {
		return Stack{}, false
	}
	i := strings.LastIndex(string(b), fatalPrefix)
	if i < 0 {
		return Stack{}, false
	}
	st, err := Parse(b[i:])
	if err != nil || st.Fatal == "" {
		return Stack{}, false
	}
	st.PID = pid
	return st, true
}

// maxDump bounds what is read of a dump: faulthandler writes at most 100 threads of 100 frames.
const maxDump = 4 << 20

// readBounded reads at most maxDump bytes of a dump file: never through a symlink, never blocking
// on a FIFO or a device (only a regular file is read).
func readBounded(path string) ([]byte, error) {
	f, err := openRegular(path, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxDump))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// openRegular opens path with flag (plus O_NOFOLLOW, O_NONBLOCK) and returns it only when it is
// a regular file.
func openRegular(path string, flag int) (*os.File, error) {
	fd, err := unix.Open(path, flag|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		if err == nil {
			err = errors.New("not a regular file")
		}
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fcntl", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// Why is the short reason a report gives when there is no stack: "no stack: " and what Take or
// Loaded said, without the package's prefix.
func Why(err error) string {
	if err == nil {
		return ""
	}
	return "no stack: " + strings.TrimPrefix(err.Error(), "pystack: ")
}

// Prune removes the files of processes gone from /proc whose file was last written more than
// grace before now (a crash dump stays until the engine had its chance to read it), and returns
// how many processes it forgot. Call it now and then (once a minute): processes the app forks
// itself (multiprocessing) leave files the engine never hears of.
func (h *Hook) Prune(now time.Time, grace time.Duration) int {
	ents, err := os.ReadDir(h.StackDir())
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".stack")
		if !ok {
			name, ok = strings.CutSuffix(e.Name(), ".err")
		}
		pid, err := strconv.Atoi(name)
		if !ok || err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(h.procRoot, name)); !errors.Is(err, os.ErrNotExist) {
			continue
		}
		fi, err := e.Info()
		if err != nil || now.Sub(fi.ModTime()) < grace {
			continue
		}
		h.Forget(pid)
		n++
	}
	return n
}
