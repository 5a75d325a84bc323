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
package pystack
