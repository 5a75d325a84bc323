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
    pp = os.environ.get("PYTHONPATH")
    if pp is not None and d:
        parts = pp.split(os.pathsep)
        if parts and os.path.abspath(parts[0] or ".") == here:
            if len(parts) == 1:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = os.pathsep.join(parts[1:])
    if not d or not sig or not os.path.isdir(d):
        return None, None, None
    return d, sig, [k for k in (keys or "").split(",") if k]


def _gwrap_stack_hook(d, sig):
    import os

    def note(reason):
        try:
            f = open(os.path.join(d, "%d.err" % os.getpid()), "a")
            try:
                f.write(reason + "\n")
            finally:
                f.close()
        except Exception:
            pass

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


def _gwrap_settings_hook(d, keys):
    # Once gunicorn.arbiter is imported, wrap Arbiter.start and Arbiter.reload so that the master
    # writes its settings for gwrap. Every failure leaves Gunicorn exactly as it was.
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
                try:
                    wrap(module.Arbiter, "start", False)
                    wrap(module.Arbiter, "reload", True)
                except Exception:
                    pass

            loader.exec_module = exec_module
            return spec

    if keys and "gunicorn.arbiter" not in sys.modules:
        sys.meta_path.insert(0, Finder())


try:
    _gwrap_dir, _gwrap_sig, _gwrap_keys = _gwrap_env()
    if _gwrap_dir:
        try:
            _gwrap_stack_hook(_gwrap_dir, _gwrap_sig)
        except Exception:
            pass
        try:
            _gwrap_settings_hook(_gwrap_dir, _gwrap_keys)
        except Exception:
            pass
    del _gwrap_dir, _gwrap_sig, _gwrap_keys
except Exception:
    pass
_gwrap_next_sitecustomize()
