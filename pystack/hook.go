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
	// EnvSettings lists (comma-separated) the Gunicorn settings a master reports to gwrap in
	// <pid>.settings; unset, it reports none.
	EnvSettings = "GWRAP_STACK_SETTINGS"
	// EnvRequests turns on the recording of each worker's requests in <pid>.req (package
	// inflight reads it); its value is the query mode: off, names or full.
	EnvRequests = "GWRAP_STACK_REQUESTS"
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
	settings []string // the Gunicorn settings a master reports (Options.Settings)
	requests string   // the query mode of the request recording; "" off (Options.Requests)

	mu   sync.Mutex
	busy map[int]bool
}

// Options tune Install; zero values take the defaults.
type Options struct {
	Parent   string         // where the private directory is made (default os.TempDir())
	Signal   syscall.Signal // DefaultSignal
	ProcRoot string         // /proc
	// Settings are the names of the Gunicorn settings a master reports in <pid>.settings (see
	// Hook.Settings); none: no report. Only these are written: a master's other settings
	// (raw_env, for one) may hold secrets.
	Settings []string
	// Requests turns on the recording of every worker's requests in <pid>.req (see
	// RequestsFile), with query strings kept as it says: "off", "names" or "full"; "" records
	// nothing.
	Requests string
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
	switch opt.Requests {
	case "", "off", "names", "full":
	default:
		return nil, fmt.Errorf("pystack: request query mode %q is not off, names or full", opt.Requests)
	}
	for _, k := range opt.Settings {
		if k == "" || strings.ContainsAny(k, ",= \x00") {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pystack: %q is not a setting name", k)
		}
	}
	h := &Hook{dir: dir, sig: opt.Signal, procRoot: opt.ProcRoot, settings: opt.Settings, requests: opt.Requests, busy: map[int]bool{}}
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
// PYTHONPATH and GWRAP_STACK_DIR, GWRAP_STACK_SIGNAL (and GWRAP_STACK_SETTINGS,
// GWRAP_STACK_REQUESTS) set: the child's environment.
func (h *Hook) Env(environ []string) []string {
	env := withHookEnv(environ, h.PathDir(), h.StackDir(), h.sig)
	if len(h.settings) > 0 {
		env = append(env, EnvSettings+"="+strings.Join(h.settings, ","))
	}
	if h.requests != "" {
		env = append(env, EnvRequests+"="+h.requests)
	}
	return env
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
		case EnvDir, EnvSignal, EnvSettings, EnvRequests:
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
	os.Remove(h.settingsFile(pid))
	os.Remove(h.settingsFile(pid) + ".tmp")
	os.Remove(h.RequestsFile(pid))
}

// RequestsFile is where worker pid records its requests (Options.Requests), for
// inflight.ReadFile: written by the worker, so read as hostile input.
func (h *Hook) RequestsFile(pid int) string {
	return filepath.Join(h.StackDir(), strconv.Itoa(pid)+".req")
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
		var name string
		var ok bool
		for _, suffix := range []string{".stack", ".err", ".settings", ".settings.tmp", ".req"} {
			if name, ok = strings.CutSuffix(e.Name(), suffix); ok {
				break
			}
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

// maxSettings bounds a master's settings file: Gunicorn has about a hundred settings, each
// value cut at 4 KiB by the hook; a file larger than this is not the hook's.
const maxSettings = 256 << 10

// ErrNoSettings says the master wrote no settings file (yet): it did not load the hook, is not a
// Gunicorn master, or could not write in gwrap's private directory (another uid).
var ErrNoSettings = errors.New("the master reported no settings")

// Settings returns what the Gunicorn master pid reported of its effective settings (JSON written
// by the hook when its arbiter started, and again after each reload): the raw bytes, untrusted
// input to be parsed defensively (gunicorn.ParseReported). The file is opened without following
// links or blocking, and must be a regular file of at most maxSettings bytes.
func (h *Hook) Settings(pid int) ([]byte, error) {
	path := h.settingsFile(pid)
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("pystack: pid %d: %w", pid, ErrNoSettings)
		}
		return nil, fmt.Errorf("pystack: open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("pystack: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxSettings {
		return nil, fmt.Errorf("pystack: %s: not a regular file of at most %d bytes", path, maxSettings)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSettings+1))
	if err != nil {
		return nil, fmt.Errorf("pystack: read %s: %w", path, err)
	}
	if len(b) > maxSettings {
		return nil, fmt.Errorf("pystack: %s: larger than %d bytes", path, maxSettings)
	}
	return b, nil
}

func (h *Hook) settingsFile(pid int) string {
	return filepath.Join(h.StackDir(), strconv.Itoa(pid)+".settings")
}
