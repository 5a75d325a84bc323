package pystack

import "strings"

// DirtyCall is what a Gunicorn dirty worker (25+) is running: Gunicorn runs each action its
// arbiter routes to the worker in a thread of its executor, as `app(action, *args)` from a lambda
// in gunicorn/dirty/worker.py, and DirtyApp.__call__ (gunicorn/dirty/app.py) dispatches it to the
// method of that name.
type DirtyCall struct {
	Running bool   // some thread is inside an action (the executor's call of the app)
	Action  string // the method DirtyApp.__call__ dispatched to; "" when the app has a __call__ of its own
	Threads int    // how many threads are inside an action (at most --dirty-threads)
}

// DirtyCall reads, from a dirty worker's stack, the actions its threads are running.
func (s Stack) DirtyCall() DirtyCall {
	var c DirtyCall
	for _, t := range s.Threads {
		for i, f := range t.Frames {
			if f.Func != "<lambda>" || !isGunicornFile(f.File, "dirty/worker.py") {
				continue
			}
			c.Running = true
			c.Threads++
			// After the lambda: DirtyApp.__call__, then the action's method.
			if i+2 < len(t.Frames) && t.Frames[i+1].Func == "__call__" && isGunicornFile(t.Frames[i+1].File, "dirty/app.py") && c.Action == "" {
				c.Action = t.Frames[i+2].Func
			}
			break
		}
	}
	return c
}

// isGunicornFile reports whether file is Gunicorn's own module rel (e.g. "dirty/worker.py").
func isGunicornFile(file, rel string) bool {
	return strings.HasSuffix(file, "/gunicorn/"+rel)
}
