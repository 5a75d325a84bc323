package pystack

import (
	"path"
	"regexp"
	"strconv"
	"strings"
)

// Top is where the app was: its innermost frame, and the library call it was in, if any.
type Top struct {
	Thread string // the thread's id
	Frame  Frame  // the app's innermost frame
	// Call is the library the app frame called into, e.g. "psycopg2" or "requests", and Func the
	// library function first entered ("get"); both empty when the app frame is the innermost
	// Python frame (time.sleep, sum(range(…)) and other C calls leave no frame of their own).
	Call, Func string
}

// String is the short form for worker.late's stack_top: `orders.py:88 in load_report`, with
// ` (requests get)` when the app frame called into a library.
func (t Top) String() string {
	s := shortFile(t.Frame.File) + ":" + lineText(t.Frame.Line) + " in " + t.Frame.Func
	if t.Call != "" {
		s += " (" + t.Call
		if t.Func != "" {
			s += " " + t.Func
		}
		s += ")"
	}
	return s
}

func lineText(n int) string {
	if n <= 0 {
		return "?"
	}
	return strconv.Itoa(n)
}

// shortFile keeps the last two path elements: enough to find the file, short enough for a line.
func shortFile(f string) string {
	dir, base := path.Split(f)
	parent := path.Base(strings.TrimSuffix(dir, "/"))
	if dir == "" || parent == "/" || parent == "." || parent == "" {
		return base
	}
	return parent + "/" + base
}

var stdlibRE = regexp.MustCompile(`/lib(64)?/(pypy|python)[0-9.]*/`)

// IsApp reports whether a frame is the app's own code: not the standard library, not an installed
// package (site-packages, dist-packages), not frozen or generated code, not an entry script in a
// bin directory (/usr/bin/gunicorn), not gwrap's hook.
func IsApp(file string) bool {
	switch {
	case file == "" || file == "???" || strings.HasPrefix(file, "<"):
		return false
	case strings.Contains(file, "/site-packages/") || strings.Contains(file, "/dist-packages/"):
		return false
	case stdlibRE.MatchString(file):
		return false
	case strings.Contains(file, "/bin/"):
		return false
	case path.Base(file) == "sitecustomize.py" && strings.HasPrefix(path.Base(path.Dir(file)), "gwrap-pystack-"):
		return false // gwrap's own hook: the frame of the app wrapper that records requests
	}
	return true
}

// library names the package or standard-library module a non-app frame belongs to:
// ".../site-packages/requests/sessions.py" → "requests", "/usr/lib/python3.11/socket.py" → "socket".
func library(file string) string {
	for _, mark := range []string{"/site-packages/", "/dist-packages/"} {
		if i := strings.LastIndex(file, mark); i >= 0 {
			return topName(file[i+len(mark):])
		}
	}
	if loc := stdlibRE.FindStringIndex(file); loc != nil {
		return topName(file[loc[1]:])
	}
	if strings.HasPrefix(file, "<frozen ") {
		return strings.TrimSuffix(strings.TrimPrefix(file, "<frozen "), ">")
	}
	return ""
}

func topName(rel string) string {
	name, _, _ := strings.Cut(rel, "/")
	return strings.TrimSuffix(name, ".py")
}

// Top finds the app's innermost frame: in the current thread (the main thread, which runs the
// sync worker's request, the event loop of gevent and Uvicorn, and a stuck boot) when it has one,
// else in the first other thread that has one (gthread's request threads). ok is false when no
// thread runs app code (an idle worker, or an app installed as a package).
func (s Stack) Top() (Top, bool) {
	order := make([]int, 0, len(s.Threads))
	for i, t := range s.Threads {
		if t.Current {
			order = append([]int{i}, order...)
		} else {
			order = append(order, i)
		}
	}
	for _, i := range order {
		if top, ok := s.Threads[i].top(); ok {
			return top, true
		}
	}
	return Top{}, false
}

func (t Thread) top() (Top, bool) {
	for i := len(t.Frames) - 1; i >= 0; i-- {
		if !IsApp(t.Frames[i].File) {
			continue
		}
		top := Top{Thread: t.ID, Frame: t.Frames[i]}
		if i+1 < len(t.Frames) {
			callee := t.Frames[i+1]
			top.Call, top.Func = library(callee.File), callee.Func
		}
		return top, true
	}
	return Top{}, false
}
