package probes

import (
	"os"
	"path/filepath"
	"strings"
)

// IsGunicornCmdline reports whether a /proc/<pid>/cmdline (NUL-separated argv) looks like
// Gunicorn's: argv[0] named gunicorn (or its process title "gunicorn: master [app]"), or a Python
// interpreter running the gunicorn script, `-m gunicorn…` or `-c CODE` whose code uses
// gunicorn.app. It is a hint for FindMaster, never proof: a shell whose script merely mentions
// gunicorn is not Gunicorn, and a custom application (`python3 server.py`) looks like nothing.
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
			return isGunicornModule(argv[i+1])
		case strings.HasPrefix(a, "-m") && len(a) > 2:
			return isGunicornModule(a[2:])
		case a == "-c" && i+1 < len(argv):
			return strings.Contains(argv[i+1], "gunicorn.app")
		case strings.HasPrefix(a, "-c") && len(a) > 2:
			return strings.Contains(a[2:], "gunicorn.app")
		case a == "-X" || a == "-W":
			i++ // an interpreter option with its value (-X dev, -W ignore)
		case strings.HasPrefix(a, "-"):
			continue // an interpreter option (-u, -B, -Xdev…)
		default:
			return filepath.Base(a) == "gunicorn"
		}
	}
	return false
}

// isGunicornModule: `-m gunicorn` and `-m gunicorn.app.wsgiapp` both run Gunicorn.
func isGunicornModule(m string) bool { return m == "gunicorn" || strings.HasPrefix(m, "gunicorn.") }

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
