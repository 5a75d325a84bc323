package pystack

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// Frame is one Python frame as faulthandler prints it: `File "x.py", line 42 in fn`. Line is 0
// when faulthandler printed ??? (unknown).
type Frame struct {
	File string `json:"file"`
	Line int    `json:"line"`
	Func string `json:"func"`
}

// String is `File:Line in Func` with File as printed.
func (f Frame) String() string {
	line := "?"
	if f.Line > 0 {
		line = strconv.Itoa(f.Line)
	}
	return f.File + ":" + line + " in " + f.Func
}

// Thread is one thread's stack, outermost frame first and innermost LAST.
type Thread struct {
	ID        string  `json:"id"`        // faulthandler's 0x… thread id; "" for a single-thread dump
	Current   bool    `json:"current"`   // the thread that ran the handler (the main thread for Take)
	Frames    []Frame `json:"frames"`    // innermost last
	Truncated bool    `json:"truncated"` // faulthandler stopped at 100 frames: outer frames missing
	GC        bool    `json:"gc"`        // the thread was collecting garbage
}

// Stack is a whole dump: every thread faulthandler saw.
type Stack struct {
	PID       int      `json:"pid"`
	Fatal     string   `json:"fatal,omitempty"` // a crash dump's error, e.g. "Segmentation fault"
	Threads   []Thread `json:"threads"`
	ThreadCut bool     `json:"thread_cut,omitempty"` // more than 100 threads: the rest was not dumped
}

// ErrFormat marks a dump that is not faulthandler's format.
var ErrFormat = errors.New("not a faulthandler dump")

const (
	fatalPrefix  = "Fatal Python error: "
	currentHead  = "Current thread "
	threadHead   = "Thread "
	stackHead    = "Stack (most recent call first):"
	headTail     = " (most recent call first):"
	framePrefix  = "  File "
	noFrame      = "  <no Python frame>"
	truncatedTag = "  ..."
)

// Bounds of what Parse keeps. faulthandler writes at most 100 threads of 100 frames; the file is
// the app's to write into once it runs as the worker (it holds the descriptor), so nothing in it
// is trusted to stay within them.
const (
	maxThreads   = 128
	maxFrames    = 128
	maxFileName  = 1024
	maxFuncName  = 256
	maxFatalText = 256
	maxLine      = 64 << 10
)

// Parse reads one faulthandler dump (a registered signal's, or a crash's with its "Fatal Python
// error" header). Lines it does not know (a crash's "Extension modules", a partial last line) are
// skipped; a dump with no thread header is ErrFormat. The dump is untrusted input: past
// maxThreads threads or maxFrames frames a thread, the rest is cut (ThreadCut, Truncated), and
// over-long names are cut.
func Parse(b []byte) (Stack, error) {
	var st Stack
	var cur *Thread
	for len(b) > 0 {
		raw := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			raw, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(raw) > maxLine {
			continue // no line of faulthandler's is this long
		}
		line := string(bytes.TrimSuffix(raw, []byte("\r")))
		switch {
		case strings.HasPrefix(line, fatalPrefix) && len(st.Threads) == 0:
			st.Fatal = cut(strings.TrimPrefix(line, fatalPrefix), maxFatalText)
		case (strings.HasPrefix(line, currentHead) || strings.HasPrefix(line, threadHead) || line == stackHead) && len(st.Threads) >= maxThreads:
			st.ThreadCut = true
			cur = nil
		case strings.HasPrefix(line, currentHead) && strings.HasSuffix(line, headTail):
			st.Threads = append(st.Threads, Thread{ID: cut(threadID(line, currentHead), maxFuncName), Current: true})
			cur = &st.Threads[len(st.Threads)-1]
		case strings.HasPrefix(line, threadHead) && strings.HasSuffix(line, headTail):
			st.Threads = append(st.Threads, Thread{ID: cut(threadID(line, threadHead), maxFuncName)})
			cur = &st.Threads[len(st.Threads)-1]
		case line == stackHead:
			st.Threads = append(st.Threads, Thread{Current: true})
			cur = &st.Threads[len(st.Threads)-1]
		case line == "...":
			st.ThreadCut = true
			cur = nil
		case cur == nil:
		case strings.HasPrefix(line, framePrefix):
			f, ok := parseFrame(line)
			if !ok {
				// A line cut short (read while being written) or garbled: keep what is certain.
				continue
			}
			if len(cur.Frames) >= maxFrames {
				cur.Truncated = true
				continue
			}
			f.File, f.Func = cut(f.File, maxFileName), cut(f.Func, maxFuncName)
			cur.Frames = append(cur.Frames, f)
		case line == truncatedTag:
			cur.Truncated = true
		case line == "  Garbage-collecting":
			cur.GC = true
		case line == noFrame, line == "":
		default:
			cur = nil // e.g. "Extension modules: …" after a crash
		}
	}
	if len(st.Threads) == 0 {
		return Stack{}, ErrFormat
	}
	for i := range st.Threads {
		fr := st.Threads[i].Frames
		for l, r := 0, len(fr)-1; l < r; l, r = l+1, r-1 {
			fr[l], fr[r] = fr[r], fr[l]
		}
	}
	return st, nil
}

// cut shortens s to at most n bytes of valid UTF-8, marking the cut with "…".
func cut(s string, n int) string {
	if len(s) <= n {
		return strings.ToValidUTF8(s, "?")
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

func threadID(line, head string) string {
	return strings.TrimSuffix(strings.TrimPrefix(line, head), headTail)
}

// parseFrame reads `  File "NAME", line N in FUNC` (NAME may be ??? unquoted, N may be ???).
// The file name is split at the last `", line ` so a quote inside it does no harm.
func parseFrame(line string) (Frame, bool) {
	rest := strings.TrimPrefix(line, framePrefix)
	var f Frame
	if strings.HasPrefix(rest, `"`) {
		i := strings.LastIndex(rest, `", line `)
		if i < 1 {
			return Frame{}, false
		}
		f.File, rest = rest[1:i], rest[i+len(`", line `):]
	} else if strings.HasPrefix(rest, "???, line ") {
		f.File, rest = "???", strings.TrimPrefix(rest, "???, line ")
	} else {
		return Frame{}, false
	}
	num, fn, ok := strings.Cut(rest, " in ")
	if !ok || fn == "" {
		return Frame{}, false
	}
	if num != "???" {
		v, err := strconv.Atoi(num)
		if err != nil || v < 0 {
			return Frame{}, false
		}
		f.Line = v
	}
	f.Func = fn
	return f, true
}

// Lines is the stack as one string per frame, innermost last, for a report's python_stack: each
// thread starts with a line naming it, e.g. "thread 0x00007f… (current)" then "  app.py:42 in f".
func (s Stack) Lines() []string {
	var out []string
	for _, t := range s.Threads {
		head := "thread " + t.ID
		if t.ID == "" {
			head = "thread"
		}
		if t.Current {
			head += " (current)"
		}
		if t.Truncated {
			head += " (outer frames cut at 100)"
		}
		out = append(out, head)
		for _, f := range t.Frames {
			out = append(out, "  "+f.String())
		}
	}
	return out
}
