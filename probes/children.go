package probes

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A worker's children and their command lines are the app's: a command line can be megabytes
// (the kernel allows 2 MiB of arguments) and hold anything, secrets, newlines and terminal
// escapes included. What is read and what is quoted are bounded.
const (
	maxChildren = 4    // children named in a deep sample
	maxCmdline  = 4096 // bytes of /proc/<pid>/cmdline read
	maxCommand  = 200  // bytes of the quoted command kept
)

// RedactArgs makes the deep samples of f pass each child's arguments through redact (gwrap
// gives postmortem.RedactArgs) before they are quoted: a command line is app text that can hold
// a password. Without it only the command's name is kept (its first argument's last element).
func (f FS) RedactArgs(redact func([]string) []string) FS {
	f.redact = redact
	return f
}

// children reads the live child processes of pid, at most maxChildren of them, with their
// quoted command lines. A zombie (exited, not yet reaped) is not one: its command line is empty.
func (f FS) children(pid int) ([]Child, error) {
	pids, err := FS{root: f.root}.ChildPIDs(pid) // not the master's cache: that is the master's
	if err != nil {
		return nil, err
	}
	var out []Child
	for _, c := range pids {
		if len(out) == maxChildren {
			break
		}
		b, truncated, err := readBounded(f.path(c, "cmdline"), maxCmdline)
		if err != nil || len(bytes.Trim(b, "\x00")) == 0 {
			continue // gone, or a zombie
		}
		out = append(out, Child{PID: c, Command: quoteCmdline(b, truncated, f.redact)})
	}
	return out, nil
}

// readBounded reads at most max bytes of a file, and says whether there was more.
func readBounded(path string, max int) ([]byte, bool, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer file.Close()
	b, err := io.ReadAll(io.LimitReader(file, int64(max)+1))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, false, err
	}
	if len(b) > max {
		return b[:max], true, nil
	}
	return b, false, nil
}

// quoteCmdline turns a /proc/<pid>/cmdline (NUL-terminated arguments, the last one cut when
// truncated; trailing NULs, which a rewritten process title leaves, are dropped) into one line: the arguments passed through redact (nil: only the
// command's name is kept), each quoted with Go's escapes when it is empty or holds a space, a
// quote, a backslash or anything not printable, joined by spaces, and cut to maxCommand bytes
// with "…" (also when the command line was longer than what was read).
func quoteCmdline(b []byte, truncated bool, redact func([]string) []string) string {
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if redact != nil {
		args = redact(args)
	} else {
		name := args[0]
		if i := strings.LastIndexByte(name, '/'); i >= 0 && i < len(name)-1 {
			name = name[i+1:]
		}
		args, truncated = []string{name}, truncated || len(args) > 1
	}
	var sb strings.Builder
	for i, a := range args {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(quoteArg(a))
		if sb.Len() > maxCommand {
			truncated = true
			break
		}
	}
	s := sb.String()
	if len(s) > maxCommand {
		s = strings.ToValidUTF8(s[:maxCommand], "")
	}
	if truncated {
		s += "…"
	}
	return s
}

// quoteArg quotes an argument that would not read back as one word.
func quoteArg(a string) string {
	if a == "" {
		return `""`
	}
	for _, r := range a {
		if r == utf8.RuneError || r == ' ' || r == '"' || r == '\'' || r == '\\' || !unicode.IsPrint(r) {
			return strconv.Quote(a)
		}
	}
	return a
}
