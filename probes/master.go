package probes

import (
	"os"
	"path/filepath"
	"strings"
)

// masterDepth bounds how far below the supervised command the Gunicorn master is looked for
// (`sh -c 'gunicorn …'`, an entrypoint script that does not exec).
const masterDepth = 3

// FindMaster returns the Gunicorn master at or below root: root itself when its command line is
// Gunicorn's, else the shallowest descendant whose command line is Gunicorn's (its children are
// workers, not masters). ok is false while there is none — a shell still running a migration
// before `exec gunicorn`, or a command that is not Gunicorn at all: its children are not workers.
func (f FS) FindMaster(root int) (pid int, ok bool) {
	level := []int{root}
	for depth := 0; depth <= masterDepth && len(level) > 0; depth++ {
		var next []int
		for _, p := range level {
			if b, err := os.ReadFile(f.path(p, "cmdline")); err == nil && IsGunicornCmdline(b) {
				return p, true
			}
			if depth < masterDepth {
				kids, err := f.Children(p)
				if err != nil {
					continue
				}
				for _, k := range kids {
					next = append(next, k.PID)
				}
			}
		}
		level = next
	}
	return 0, false
}

// IsGunicornCmdline reports whether a /proc/<pid>/cmdline (NUL-separated argv) runs Gunicorn:
// argv[0] named gunicorn (or its process title "gunicorn: master [app]"), or a Python
// interpreter running the gunicorn script or `-m gunicorn`. A shell whose script merely
// mentions gunicorn is not Gunicorn.
func IsGunicornCmdline(b []byte) bool {
	argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if len(argv) == 0 || argv[0] == "" {
		return false
	}
	if len(argv) == 1 && strings.Contains(argv[0], " ") {
		// setproctitle rewrote argv into one string: "gunicorn: master [app:app]".
		return strings.HasPrefix(argv[0], "gunicorn: master")
	}
	base := filepath.Base(argv[0])
	if base == "gunicorn" {
		return true
	}
	if !strings.HasPrefix(base, "python") {
		return false
	}
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		switch {
		case a == "-m" && i+1 < len(argv):
			return argv[i+1] == "gunicorn"
		case strings.HasPrefix(a, "-m") && len(a) > 2:
			return a[2:] == "gunicorn"
		case strings.HasPrefix(a, "-"):
			continue // an interpreter option (-u, -X dev, -W…)
		default:
			return filepath.Base(a) == "gunicorn"
		}
	}
	return false
}

// killPending reads the pending-signal masks of /proc/<pid>/status (SigPnd for the thread,
// ShdPnd for the process) and reports whether SIGKILL is among them.
func killPending(status []byte) bool { return parseStatus(status).killPending }

func hexVal(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10
	}
	return 0
}

// Command reads a process's argv, environment and working directory (/proc/<pid>/cmdline,
// environ and cwd): what Gunicorn's settings are read from when it was not gwrap's own command.
func (f FS) Command(pid int) (argv, env []string, dir string, err error) {
	b, err := os.ReadFile(f.path(pid, "cmdline"))
	if err != nil {
		return nil, nil, "", err
	}
	argv = splitNUL(b)
	if b, err := os.ReadFile(f.path(pid, "environ")); err == nil {
		env = splitNUL(b)
	}
	dir, _ = os.Readlink(f.path(pid, "cwd"))
	return argv, env, dir, nil
}

func splitNUL(b []byte) []string {
	s := strings.TrimRight(string(b), "\x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}
