# gwrap's stack hook. gwrap writes this file into a private directory of its own and puts that
# directory first on the child's PYTHONPATH; Python imports it at start-up (site.py's
# "sitecustomize"). Without gwrap's variables it does nothing at all. With them it:
#   - registers faulthandler on one real-time signal (GWRAP_STACK_SIGNAL), a signal Gunicorn never
#     resets, so gwrap can ask any process for every thread's Python stack, even while a C loop
#     holds the GIL (faulthandler writes from the C signal handler, without the GIL);
#   - enables faulthandler's crash dump (SIGSEGV, SIGFPE, SIGBUS, SIGILL, SIGABRT), unless the
#     user already enabled it (PYTHONFAULTHANDLER / -X faulthandler): then theirs stays as it is;
#   - points both at GWRAP_STACK_DIR/<pid>.stack, re-opened in every forked child right after
#     fork (before Gunicorn drops privileges with --user), so each worker writes its own file and
#     nothing reaches the app's stdout or stderr;
#   - in a Gunicorn master, writes the master's effective settings named in GWRAP_STACK_SETTINGS
#     (its Config, whatever set them: the command line, a config file, a custom Application's
#     Python) to
#     GWRAP_STACK_DIR/<pid>.settings when the arbiter starts and after a reload, through a
#     one-shot import hook on gunicorn.arbiter: gwrap cannot read a custom application's settings
#     from its command line;
#   - when GWRAP_STACK_REQUESTS is set (the query mode: off, names or full), records every request
#     each Gunicorn worker serves, in GWRAP_STACK_DIR/<pid>.req, a small fixed-size file shared
#     with gwrap (mmap): made by the worker right after the fork (still as the master's user),
#     written when a request starts and when it ends, read by gwrap with bounded preads, so it
#     survives a SIGKILL and a C loop holding the GIL. The same import hook wraps
#     Arbiter.spawn_worker; the worker wraps the app its class loads (load_wsgi), per thread,
#     greenlet or asyncio task (see _GwrapRequests for the layout, package inflight for the reader);
#   - then loads the next "sitecustomize" on sys.path (Debian's), so it never hides it, and takes
#     its own directory off sys.path and its variables out of os.environ, so the app's import path
#     and environment are what they were (a Gunicorn re-exec after USR2 therefore runs unhooked).
# It must run on any Python that reads PYTHONPATH (even Python 2): old syntax only, and every
# failure is written to GWRAP_STACK_DIR/<pid>.err for gwrap to quote, never raised.


def _gwrap_env():
    # Takes gwrap's variables and directory out of the environment; returns them.
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    except Exception:
        pass

    # The app sees the environment it would have had without gwrap: its variables go, and so does
    # this directory from PYTHONPATH (gwrap put it first; alone, PYTHONPATH was unset). Processes
    # the app starts are then not hooked; forks of this one are (os.register_at_fork below).
    d = os.environ.pop("GWRAP_STACK_DIR", None)
    sig = os.environ.pop("GWRAP_STACK_SIGNAL", None)
    keys = os.environ.pop("GWRAP_STACK_SETTINGS", None)
    requests = os.environ.pop("GWRAP_STACK_REQUESTS", None)
    pp = os.environ.get("PYTHONPATH")
    if pp is not None and d:
        parts = pp.split(os.pathsep)
        if parts and os.path.abspath(parts[0] or ".") == here:
            if len(parts) == 1:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = os.pathsep.join(parts[1:])
    if not d or not sig or not os.path.isdir(d):
        return None, None, None, None
    return d, sig, [k for k in (keys or "").split(",") if k], requests


def _gwrap_note(d, reason):
    # Says why something of the hook does not work, in <pid>.err, for gwrap to quote.
    import os

    try:
        f = open(os.path.join(d, "%d.err" % os.getpid()), "a")
        try:
            f.write(reason + "\n")
        finally:
            f.close()
    except Exception:
        pass


def _gwrap_stack_hook(d, sig):
    import os

    def note(reason):
        _gwrap_note(d, reason)

    try:
        import faulthandler
        import signal
    except ImportError:
        note("this Python has no faulthandler (Python < 3.3)")
        return
    if not hasattr(faulthandler, "register") or not hasattr(os, "register_at_fork"):
        note("this Python lacks faulthandler.register or os.register_at_fork (Python < 3.7)")
        return
    try:
        signum = int(sig)
    except ValueError:
        note("GWRAP_STACK_SIGNAL is not a number: %r" % sig)
        return
    if not (signal.SIGRTMIN <= signum <= signal.SIGRTMAX):
        note("signal %d is not a real-time signal here" % signum)
        return
    if signal.getsignal(signum) is not signal.SIG_DFL:
        note("signal %d is already in use by this process" % signum)
        return
    crash = not faulthandler.is_enabled()
    state = {}

    def point():
        pid = os.getpid()
        try:
            f = open(os.path.join(d, "%d.stack" % pid), "ab", 0)
        except Exception as e:
            # No file of its own: never dump into the parent's file, and leave the signal caught
            # by nobody, which gwrap reads from /proc before it sends anything.
            try:
                faulthandler.unregister(signum)
                if state.get("crash"):
                    faulthandler.disable()
            except Exception:
                pass
            note("cannot open %d.stack: %s" % (pid, e))
            return
        try:
            faulthandler.register(signum, file=f, all_threads=True, chain=False)
            if crash:
                faulthandler.enable(file=f, all_threads=True)
                state["crash"] = True
        except Exception as e:
            note("faulthandler: %s" % e)
            f.close()
            return
        old = state.get("file")
        state["file"] = f  # faulthandler holds a reference too; this one closes the parent's copy
        if old is not None:
            try:
                old.close()
            except Exception:
                pass

    point()
    os.register_at_fork(after_in_child=point)


# The requests each worker serves, in DIR/<pid>.req: a file of fixed size, mapped shared by the
# worker, written when a request starts and when it ends (no system call: stores into the
# mapping), read by gwrap with bounded preads. Everything in it is the app's to scribble on: gwrap
# parses it as hostile input (package inflight). Little-endian; sizes in bytes.
#
# Header, 128 bytes:
#   0 "GWRQ"  4 u16 version (1)  6 u16 header size (128)  8 u16 slot size (1024)  10 u16 slots
#   12 u32 pid  16 u64 the process's start time (clock ticks after boot, /proc/self/stat field 22;
#   0: unknown)  24 u8 model (1 thread, 2 greenlet, 3 asyncio task)  25 u8 query mode (0 off,
#   1 names, 2 full)  26 u8 status (0 recording, 1 worker class not recorded, 2 app not wrapped)
#   28 u16 slots used so far  32 u32 requests in flight without a slot (all were taken)
#   40 u64 requests never recorded for want of a slot  48 u64 CLOCK_MONOTONIC ns when the
#   worker's SIGABRT handler ran (0: never)  64 32s worker class ("sync", "gthread", "gevent",
#   "eventlet", "asgi", "uvicorn"; another class's name when status is 1)
# Slot i, at 128 + 1024*i (one per request in flight; a thread, greenlet or task takes a free one):
#   0 u32 generation, written last  4 u8 state (0 never used, 1 in flight, 2 ended, 3 cut: ended
#   by SystemExit or KeyboardInterrupt, or after the worker's SIGABRT)  8 u64 end (CLOCK_MONOTONIC
#   ns)  16 u64 requests ended in this slot  24 u64 the last one's duration (ns)  32 u64 start
#   (CLOCK_MONOTONIC ns)  40 u64 thread id (threading.get_ident: faulthandler's "Thread 0x…")
#   48 u64 greenlet or task id (0 for a thread)  56 u8 method length (≤ 16)  57 u8 address length
#   (≤ 56)  58 u16 path length (≤ 640)  60 u16 query length (≤ 236)  64 u32 the path's whole
#   length  72 method, remote address, path, query, one after the other  1020 u32 generation,
#   written first.
# A reader takes a slot whose two generations match; a request that starts changes both (the
# last one first, the first one last), so a reader in the middle of it sees them apart. A request
# that ends only stores its state, end, count and duration (8-byte fields). The query is as the mode says: off, nothing; full, the raw query; names, each element
# "name=" (its value dropped) or "" (an element without "=", or a name longer than 64 bytes, is
# dropped whole). Headers and bodies are never recorded.

_GWRAP_REQ_IDENT = []  # _thread.get_ident, as it was when the master imported gunicorn.arbiter
_GWRAP_REQ_HEADER = 128
_GWRAP_REQ_SLOT = 1024
_GWRAP_REQ_MODES = {"off": 0, "names": 1, "full": 2}
# Worker classes whose app gwrap wraps, by the name of the class (or its closest known base):
# short name, model, the worker attribute that holds the loaded app, and the app's interface.
_GWRAP_REQ_CLASSES = {
    "gunicorn.workers.sync.SyncWorker": ("sync", 1, "wsgi", "wsgi"),
    "gunicorn.workers.gthread.ThreadWorker": ("gthread", 1, "wsgi", "wsgi"),
    "gunicorn.workers.ggevent.GeventWorker": ("gevent", 2, "wsgi", "wsgi"),
    "gunicorn.workers.geventlet.EventletWorker": ("eventlet", 2, "wsgi", "wsgi"),
    "gunicorn.workers.gasgi.ASGIWorker": ("asgi", 3, "asgi", "asgi"),
    "uvicorn.workers.UvicornWorker": ("uvicorn", 3, "wsgi", "asgi"),
    "uvicorn_worker.UvicornWorker": ("uvicorn", 3, "wsgi", "asgi"),
}


def _gwrap_requests_hook(d, mode, Arbiter):
    # In the master: wrap Arbiter.spawn_worker, so that the worker it forks (and only it) makes
    # its request file right after the fork, while it still runs as the master's user (Gunicorn
    # drops privileges with --user later, in init_process), and wraps its app.
    import os

    if mode not in _GWRAP_REQ_MODES:
        _gwrap_note(d, "requests: unknown query mode %r" % mode)
        return
    if not hasattr(os, "register_at_fork"):
        return
    import _thread

    # The original, before the app or its worker class patches it (gevent's returns a greenlet's
    # id): a thread's id, as faulthandler names the thread in a stack.
    _GWRAP_REQ_IDENT.append(_thread.get_ident)
    state = {"plan": None}
    orig = Arbiter.spawn_worker

    def spawn_worker(self, *args, **kwargs):
        try:
            state["plan"] = _gwrap_requests_plan(self)
        except Exception:
            state["plan"] = None
        try:
            return orig(self, *args, **kwargs)
        finally:
            state["plan"] = None

    def child():
        plan = state["plan"]
        if plan is None:
            return
        state["plan"] = None
        try:
            _gwrap_requests_child(d, _GWRAP_REQ_MODES[mode], plan)
        except Exception as e:
            _gwrap_note(d, "requests: %s" % e)

    spawn_worker.__name__ = orig.__name__
    spawn_worker.__doc__ = orig.__doc__
    os.register_at_fork(after_in_child=child)
    Arbiter.spawn_worker = spawn_worker


def _gwrap_requests_plan(arbiter):
    # What the next worker records: its class, short name, model, slots, app attribute and
    # interface (slots 0: a class whose app gwrap does not wrap).
    wc = arbiter.worker_class
    for c in getattr(wc, "__mro__", ()):
        known = _GWRAP_REQ_CLASSES.get("%s.%s" % (c.__module__, c.__name__))
        if known is not None:
            break
    else:
        return (wc, str(getattr(wc, "__name__", "?")), 0, 0, None, None)
    name, model, attr, kind = known
    if name == "sync":
        n = 1
    elif name == "gthread":
        n = max(1, min(int(arbiter.cfg.threads), 128))
    else:
        n = max(1, min(int(arbiter.cfg.worker_connections), 64))
    return (wc, name, model, n, attr, kind)


def _gwrap_requests_child(d, mode, plan):
    # In the worker, right after the fork: make the file, and wrap the app its class loads.
    import os

    wc, name, model, n, attr, kind = plan
    rec = _GwrapRequests.create(d, mode, name, model, n)
    if rec is None or n == 0:
        return
    os.register_at_fork(after_in_child=rec.stop)  # the worker's own children record nothing
    load = wc.load_wsgi

    def load_wsgi(self, *args, **kwargs):
        result = load(self, *args, **kwargs)
        try:
            app = getattr(self, attr)
            wrapped = _gwrap_requests_wrap(app, rec, name, kind, self)
            if wrapped is None:
                rec.status(2)
            else:
                setattr(self, attr, wrapped)
        except Exception as e:
            rec.status(2)
            _gwrap_note(d, "requests: %s" % e)
        return result

    load_wsgi.__name__ = load.__name__
    load_wsgi.__doc__ = load.__doc__
    wc.load_wsgi = load_wsgi
    # Gunicorn's timeout: the SIGABRT handler; requests that end after it were cut, not served.
    for h in ("handle_abort", "handle_abort_signal"):
        orig = getattr(wc, h, None)
        if orig is not None:
            setattr(wc, h, _gwrap_requests_abort(rec, orig))


def _gwrap_requests_abort(rec, orig):
    def handle(self, *args, **kwargs):
        rec.abort()
        return orig(self, *args, **kwargs)

    handle.__name__ = orig.__name__
    handle.__doc__ = orig.__doc__
    return handle


def _gwrap_requests_wrap(app, rec, name, kind, worker):
    # The app the worker calls, recording each request; None when it cannot be wrapped safely.
    if kind == "wsgi":
        if not callable(app):
            return None
        return _gwrap_wsgi(app, rec)
    if name == "uvicorn":
        interface = getattr(getattr(worker, "config", None), "interface", "auto")
        if interface not in ("auto", "asgi3"):
            return None
    if not _gwrap_is_asgi3(app):
        return None
    ns = {}
    exec(compile(_GWRAP_ASGI, "<gwrap>", "exec"), ns)
    return ns["wrap"](app, rec)


def _gwrap_is_asgi3(app):
    # Uvicorn's own test (Config.load): a coroutine function, or an object whose __call__ is one;
    # a class (ASGI 2) is left alone.
    import asyncio
    import inspect

    if inspect.isclass(app):
        return False
    if inspect.isfunction(app):
        return asyncio.iscoroutinefunction(app)
    return asyncio.iscoroutinefunction(getattr(app, "__call__", None))


# Compiled only for an ASGI worker (the file itself must parse on any Python).
_GWRAP_ASGI = '''
def wrap(app, rec):
    begin = rec.begin_asgi
    end = rec.end

    async def gwrap_asgi(scope, receive, send):
        i = begin(scope)
        if i == -1:
            return await app(scope, receive, send)
        try:
            result = await app(scope, receive, send)
        except BaseException as e:
            end(i, isinstance(e, (SystemExit, KeyboardInterrupt)))
            raise
        end(i, False)
        return result

    return gwrap_asgi
'''


def _gwrap_wsgi(app, rec):
    begin = rec.begin_wsgi
    end = rec.end
    closing = rec.closing

    def gwrap_wsgi(environ, start_response):
        i = begin(environ)
        if i == -1:
            return app(environ, start_response)
        try:
            result = app(environ, start_response)
        except BaseException as e:
            end(i, not isinstance(e, Exception))
            raise
        return closing(result, i, environ)

    return gwrap_wsgi


class _GwrapClose(object):
    # Ends the request when the server closes the response (WSGI calls close() once it sent it).
    __slots__ = ("gw_end", "gw_i")

    def close(self):
        end = self.gw_end
        if end is not None:
            self.gw_end = None
            end(self.gw_i, False)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class _GwrapList(list):
    # A list or tuple response, kept a list (servers size a list response).
    __slots__ = ("gw_end", "gw_i")
    close = _GwrapClose.__dict__["close"]
    __del__ = _GwrapClose.__dict__["__del__"]


class _GwrapIter(object):
    __slots__ = ("it", "gw_end", "gw_i")

    def __iter__(self):
        return iter(self.it)

    def close(self):
        try:
            c = getattr(self.it, "close", None)
            if c is not None:
                c()
        finally:
            _GwrapClose.__dict__["close"](self)

    def __del__(self):
        try:
            _GwrapClose.__dict__["close"](self)
        except Exception:
            pass


class _GwrapSizedIter(_GwrapIter):
    __slots__ = ()

    def __len__(self):
        return len(self.it)


class _GwrapRequests(object):
    # One worker's request file and its free slots. Slots are taken from and given back to a free
    # list (list.pop and list.append are atomic in CPython), so the threads of gthread, the
    # greenlets of gevent and the tasks of an ASGI loop each write only the slot they hold.
    # Every method returns instead of raising: a request that cannot be recorded runs as before.

    def __init__(self, d, mm, mode, model, n):
        import struct
        import time
        import _thread

        self.d = d
        self.mm = mm
        self.mode = mode
        self.n = n
        self.off = False
        self.aborting = False
        self.free = list(range(n - 1, -1, -1))
        self.gen = [0] * n
        self.served = [0] * n
        self.last = [0] * n
        self.start = [0] * n
        self.busy = [False] * n
        self.used = 0
        self.over = 0
        self.lost = 0
        self.lock = _thread.allocate_lock()  # the header's counters (rare: a new slot, a full table)
        self.mono = time.monotonic_ns
        self.ident = (_GWRAP_REQ_IDENT or [_thread.get_ident])[0]
        self.task = None
        if model == 2:
            from greenlet import getcurrent

            self.task = lambda: id(getcurrent())
        elif model == 3:
            from asyncio import current_task

            self.task = lambda: id(current_task())
        self.u16 = struct.Struct("<H").pack_into
        self.u32 = struct.Struct("<I").pack_into
        self.u64 = struct.Struct("<Q").pack_into
        self.begin_fields = struct.Struct("<B3xQQQQQQBBHHxxI").pack_into
        self.end_fields = struct.Struct("<B3xQQQ").pack_into
        self.begin_wsgi, self.begin_asgi, self.end = self.hot()

    @classmethod
    def create(cls, d, mode, name, model, n):
        # Makes DIR/<pid>.req with all its blocks allocated (a later write into a hole of a full
        # tmpfs would be a SIGBUS), maps it, writes the header; None when it cannot.
        import mmap
        import os
        import stat
        import struct

        pid = os.getpid()
        size = _GWRAP_REQ_HEADER + _GWRAP_REQ_SLOT * n
        path = os.path.join(d, "%d.req" % pid)
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as e:
            _gwrap_note(d, "requests: cannot open %d.req: %s" % (pid, e))
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                _gwrap_note(d, "requests: %d.req is not a regular file" % pid)
                return None
            os.posix_fallocate(fd, 0, size)
            mm = mmap.mmap(fd, size)
        except (OSError, ValueError, AttributeError) as e:
            _gwrap_note(d, "requests: cannot map %d.req: %s" % (pid, e))
            return None
        finally:
            os.close(fd)
        start = 0
        try:
            f = open("/proc/self/stat", "rb")
            try:
                start = int(f.read().rsplit(b")", 1)[1].split()[19])
            finally:
                f.close()
        except Exception:
            pass
        cname = name.encode("utf-8", "replace")[:32]
        struct.pack_into("<4sHHHHIQBBBxH", mm, 0, b"GWRQ", 1, _GWRAP_REQ_HEADER, _GWRAP_REQ_SLOT, n, pid,
                         start, model, mode, 0 if n else 1, 0)
        mm[64:64 + len(cname)] = cname
        if n == 0:
            return None
        return cls(d, mm, mode, model, n)

    def stop(self):
        self.off = True

    def status(self, code):
        try:
            self.mm[26:27] = bytes(bytearray([code]))
        except Exception:
            pass

    def abort(self):
        try:
            self.aborting = True
            self.u64(self.mm, 48, self.mono())
        except Exception:
            pass

    def query(self, q):
        # The query q as the mode records it (see the layout above).
        if self.mode == 2:
            return q[:236]
        if self.mode == 0:
            return ""
        parts = []
        for x in q[:1024].split("&"):
            j = x.find("=")
            parts.append(x[:j + 1] if 0 <= j <= 64 else "")
        return "&".join(parts)[:236]

    def hot(self):
        # The functions every request calls, as closures over the state they touch (each name a
        # cell, not an attribute lookup): begin_wsgi(environ) and begin_asgi(scope) record a
        # request that starts and return its slot (-1 not recorded, -2 no free slot);
        # end(slot, cut) records that it ended.
        rec = self
        mm = self.mm
        pop = self.free.pop
        append = self.free.append
        gen = self.gen
        served = self.served
        last = self.last
        start = self.start
        busy = self.busy
        mono = self.mono
        ident = self.ident
        task = self.task
        u32 = self.u32
        begin_fields = self.begin_fields
        end_fields = self.end_fields
        query = self.query
        offs = [_GWRAP_REQ_HEADER + _GWRAP_REQ_SLOT * i for i in range(self.n)]

        def put(m, a, p, q):
            try:
                i = pop()
            except IndexError:
                rec.overflow(1)
                return -2
            try:
                m = m[:16]
                a = a[:56]
                pp = p[:640]
                blob = (m + a + pp + q).encode("latin-1", "replace")  # one byte a character
                off = offs[i]
                g = gen[i] = (gen[i] + 1) & 0xffffffff
                now = start[i] = mono()
                busy[i] = True
                u32(mm, off + 1020, g)
                begin_fields(mm, off + 4, 1, 0, served[i], last[i], now, ident(), task() if task else 0,
                             len(m), len(a), len(pp), len(q), len(p))
                off2 = off + 72
                mm[off2:off2 + len(blob)] = blob
                u32(mm, off, g)
                if i >= rec.used:
                    rec.grow(i + 1)
                return i
            except Exception:
                busy[i] = False
                append(i)
                return -1

        def begin_wsgi(environ):
            try:
                if rec.off:
                    return -1
                raw = environ.get("RAW_URI")
                if raw:
                    j = raw.find("?")
                    if j < 0:
                        p, q = raw, ""
                    else:
                        p, q = raw[:j], query(raw[j + 1:])
                else:
                    p = environ.get("PATH_INFO") or ""
                    q = environ.get("QUERY_STRING")
                    q = query(q) if q else ""
                return put(environ.get("REQUEST_METHOD") or "", environ.get("REMOTE_ADDR") or "", p, q)
            except Exception:
                return -1

        def begin_asgi(scope):
            try:
                if rec.off or scope.get("type") != "http":
                    return -1
                p = scope.get("raw_path")
                p = p.decode("latin-1") if p else (scope.get("path") or "")
                q = scope.get("query_string")
                q = query(q.decode("latin-1")) if q else ""
                c = scope.get("client")
                return put(scope.get("method") or "", str(c[0]) if c else "", p, q)
            except Exception:
                return -1

        def end(i, cut):
            if i < 0:
                if i == -2:
                    rec.overflow(-1)
                return
            if not busy[i] or rec.off:
                return
            busy[i] = False
            try:
                # One store, no generation: whichever of these fields a reader sees old, the
                # request is either still in flight or over, and its strings are unchanged.
                now = mono()
                n = served[i] = served[i] + 1
                d = last[i] = now - start[i]
                end_fields(mm, offs[i] + 4, 3 if cut or rec.aborting else 2, now, n, d)
            except Exception:
                pass
            append(i)

        return begin_wsgi, begin_asgi, end

    def closing(self, result, i, environ):
        # The response, made to end request i when the server closes it.
        try:
            t = type(result)
            if t is list or t is tuple:
                r = _GwrapList(result)
            else:
                fw = environ.get("wsgi.file_wrapper")
                if isinstance(fw, type) and isinstance(result, fw):
                    return self.closing_file(result, i)
                if not hasattr(t, "__iter__"):  # not a body (eventlet's ALREADY_HANDLED)
                    self.end(i, False)
                    return result
                r = (_GwrapSizedIter if hasattr(t, "__len__") else _GwrapIter)()
                r.it = result
            r.gw_end = self.end
            r.gw_i = i
            return r
        except Exception:
            self.end(i, False)
            return result

    def closing_file(self, result, i):
        # A file response stays the server's file_wrapper (it sends it with sendfile).
        orig = getattr(result, "close", None)
        end = self.end

        def close():
            try:
                if orig is not None:
                    orig()
            finally:
                end(i, False)

        result.close = close
        return result

    def grow(self, used):
        with self.lock:
            if used > self.used:
                self.used = used
                self.u16(self.mm, 28, used)

    def overflow(self, delta):
        try:
            with self.lock:
                self.over += delta
                if delta > 0:
                    self.lost += 1
                self.u32(self.mm, 32, max(self.over, 0))
                self.u64(self.mm, 40, self.lost)
        except Exception:
            pass


def _gwrap_next_sitecustomize():
    # Load the sitecustomize this file shadows (Debian's /usr/lib/python3.X/sitecustomize.py), as
    # site.py would have; its errors propagate to site.py exactly as they would without gwrap.
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        from importlib.machinery import PathFinder
        from importlib.util import module_from_spec
    except ImportError:
        return
    spec = PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    mod = module_from_spec(spec)
    sys.modules["sitecustomize"] = mod
    spec.loader.exec_module(mod)


def _gwrap_arbiter_hook(d, keys, requests):
    # Once gunicorn.arbiter is imported, wrap Arbiter.start and Arbiter.reload so that the master
    # writes its settings for gwrap (keys), and Arbiter.spawn_worker so that each worker records
    # its requests (requests: the query mode). Every failure leaves Gunicorn exactly as it was.
    import os
    import sys

    try:
        import importlib.util
        find_spec = importlib.util.find_spec
    except (ImportError, AttributeError):
        return

    def plain(v):
        if isinstance(v, type):
            return "%s.%s" % (v.__module__, v.__name__)
        if isinstance(v, dict):
            return bool(v)
        if isinstance(v, (list, tuple)):
            return [x for x in v if isinstance(x, str)][:64]
        if isinstance(v, (bool, int, float, type(None))):
            return v
        if isinstance(v, str) and len(v) <= 4096:
            return v
        raise ValueError("not a plain value")

    def dump(arbiter):
        import json
        values = {}
        settings = arbiter.cfg.settings
        for name in keys:
            try:
                values[name] = plain(settings[name].get())
            except Exception:
                pass
        version = ""
        try:
            import gunicorn
            version = str(gunicorn.__version__)
        except Exception:
            pass
        path = os.path.join(d, "%d.settings" % os.getpid())
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        f = os.fdopen(fd, "w")
        try:
            json.dump({"version": version, "values": values}, f)
        finally:
            f.close()
        os.rename(tmp, path)

    def wrap(cls, name, after):
        orig = getattr(cls, name)

        def wrapped(self, *args, **kwargs):
            if not after:
                try:
                    dump(self)
                except Exception:
                    pass
            result = orig(self, *args, **kwargs)
            if after:
                try:
                    dump(self)
                except Exception:
                    pass
            return result

        wrapped.__name__ = orig.__name__
        wrapped.__doc__ = orig.__doc__
        setattr(cls, name, wrapped)

    class Finder(object):
        busy = False

        def find_module(self, name, path=None):
            return None

        def find_spec(self, name, path=None, target=None):
            if name != "gunicorn.arbiter" or self.busy:
                return None
            self.busy = True
            try:
                spec = find_spec(name)
            except Exception:
                spec = None
            self.busy = False
            loader = getattr(spec, "loader", None)
            run = getattr(loader, "exec_module", None)
            if run is None:
                return None
            finder = self

            def exec_module(module):
                try:
                    sys.meta_path.remove(finder)
                except ValueError:
                    pass
                run(module)
                if keys:
                    try:
                        wrap(module.Arbiter, "start", False)
                        wrap(module.Arbiter, "reload", True)
                    except Exception:
                        pass
                if requests:
                    try:
                        _gwrap_requests_hook(d, requests, module.Arbiter)
                    except Exception as e:
                        _gwrap_note(d, "requests: %s" % e)

            loader.exec_module = exec_module
            return spec

    if (keys or requests) and "gunicorn.arbiter" not in sys.modules:
        sys.meta_path.insert(0, Finder())


try:
    _gwrap_dir, _gwrap_sig, _gwrap_keys, _gwrap_requests = _gwrap_env()
    if _gwrap_dir:
        try:
            _gwrap_stack_hook(_gwrap_dir, _gwrap_sig)
        except Exception:
            pass
        try:
            _gwrap_arbiter_hook(_gwrap_dir, _gwrap_keys, _gwrap_requests)
        except Exception:
            pass
    del _gwrap_dir, _gwrap_sig, _gwrap_keys, _gwrap_requests
except Exception:
    pass
_gwrap_next_sitecustomize()
