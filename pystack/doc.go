// Package pystack takes the Python stack of a Gunicorn worker from outside, with no change to the
// app and no privilege beyond signalling a process of the same user: every thread's frames while
// the worker is late (before Gunicorn kills it), and the dump a crashing worker left behind.
//
// How: Install writes a sitecustomize.py (embedded here) into a private directory that Env puts
// first on the child's PYTHONPATH. In every Python process of the child's tree it registers
// faulthandler on one real-time signal (Gunicorn resets ABRT HUP QUIT INT TERM USR1 USR2 WINCH
// CHLD in its workers, never a real-time signal) and enables faulthandler's crash dump, both
// writing to DIR/<pid>.stack, re-opened by each forked worker; then it loads the sitecustomize it
// shadows (Debian's) and takes its directory off sys.path. faulthandler dumps from the C signal
// handler without the GIL, so a C loop holding the GIL is no obstacle. Take sends the signal to
// the worker's main thread only after /proc says the signal is caught, so a process without the
// hook is never killed by a real-time signal's default action, and knows the dump is complete
// when the signal is neither pending nor blocked any more (the kernel blocks it while the handler
// runs). Parse reads faulthandler's format; Stack.Top names the app's innermost frame.
//
// Use, from the launch side and the engine:
//
//	h, err := pystack.Install(pystack.Options{})  // before the child starts; on error: say once, go on without
//	defer h.Close()                                // removes the private directory
//	cfg.Env = h.Env(os.Environ())                  // supervisor.Config.Env: PYTHONPATH and GWRAP_STACK_*
//	err = h.Loaded(masterPid)                      // once, after the first worker booted: say once why not
//	st, err := h.Take(ctx, workerPid)              // worker late (and stuck boot); ctx bounds the wait (~1 s)
//	st, ok := h.Crash(workerPid)                   // a worker died of a signal: its crash dump, if any
//	h.Forget(workerPid)                            // the worker's report is written
//	h.Prune(now, time.Minute)                      // now and then: files of processes nobody reported
//
// Stack.Top().String() is worker.late's stack_top; Stack.Lines() is incident.python_stack; Why(err)
// is the report's "no stack: …"; h.Source(pid, top.Frame) is the text of the app's line, which
// names the C call a frame cannot show (cur.execute(…), time.sleep(…), sum(range(…))).
//
// Where it cannot work, Take and Loaded say why (errors.Is with ErrNoHook, ErrNotCaught,
// ErrBlocked, ErrPermission, ErrGone, ErrTimeout): a command that is not Python, a Python started
// with -I/-E/-S or older than 3.7, a Gunicorn master running as another user than gwrap (it cannot
// read gwrap's 0700 directory), a seccomp profile that forbids the signal. After a USR2 upgrade
// the new master runs without the hook (the hook gives the app back its environment, so Gunicorn's
// re-exec does not carry it).
package pystack
