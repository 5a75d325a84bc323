"""Runs gwrap's request recorder (pystack/sitecustomize.py) through scenarios, for inflight's tests.

python3 driver.py HOOK DIR: loads the hook as a module (without gwrap's variables it installs
nothing), and leaves DIR/<scenario>.req, one request file per scenario, as a worker would.
Prints one JSON object: what the apps returned to the server, per scenario.
"""
import asyncio
import importlib.util
import json
import os
import sys

spec = importlib.util.spec_from_file_location("gwrap_hook", sys.argv[1])
hook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hook)
D = sys.argv[2]
out = {}
held = []  # responses in flight: a server holds them until it closes them


def recorder(name, mode, model=1, n=1, cls="sync"):
    rec = hook._GwrapRequests.create(D, mode, cls, model, n)
    os.rename(os.path.join(D, "%d.req" % os.getpid()), os.path.join(D, name + ".req"))
    return rec


def hello(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]


def env(method="GET", uri="/", addr="10.0.0.7", **kw):
    e = {"REQUEST_METHOD": method, "RAW_URI": uri, "REMOTE_ADDR": addr, "REMOTE_PORT": "5000"}
    e.update(kw)
    return e


def serve(app, environ):
    """What Gunicorn does: call, iterate, close."""
    body = app(environ, lambda *a: None)
    try:
        return b"".join(body).decode()
    finally:
        if hasattr(body, "close"):
            body.close()


# sync: one request served, one in flight (the app never returned).
rec = recorder("sync", 1)
app = hook._gwrap_wsgi(hello, rec)
out["sync"] = serve(app, env(uri="/done"))
held.append(app(env(uri="/sleep/30?token=s3cret&x=1&bare&" + "n" * 70 + "=v"), lambda *a: None))

# the same in flight under each query mode
for mode, name in ((0, "off"), (2, "full")):
    rec = recorder(name, mode)
    app = hook._gwrap_wsgi(hello, rec)
    held.append(app(env(uri="/sleep/30?token=s3cret&x=1"), lambda *a: None))

# gthread: 2 slots, 3 requests at once: one has no slot; then one of the first two ends.
rec = recorder("full_table", 1, n=2, cls="gthread")
app = hook._gwrap_wsgi(hello, rec)
a = app(env(uri="/a"), lambda *x: None)
held.append(app(env(uri="/b"), lambda *x: None))
held.append(app(env(uri="/c"), lambda *x: None))
a.close()

# a request cut by SystemExit (Gunicorn 22+'s sync worker after SIGABRT); one that failed; one
# ending after the worker's abort


def exits(environ, start_response):
    raise SystemExit(1)


def fails(environ, start_response):
    raise ValueError("app error")


rec = recorder("exits", 1)
try:
    hook._gwrap_wsgi(exits, rec)(env(uri="/exits"), None)
except SystemExit:
    pass
rec = recorder("fails", 1)
try:
    hook._gwrap_wsgi(fails, rec)(env(uri="/fails"), None)
except ValueError:
    pass
rec = recorder("aborted", 1, n=2, cls="gthread")
app = hook._gwrap_wsgi(hello, rec)
late = app(env(uri="/late"), lambda *x: None)
held.append(app(env(uri="/running"), lambda *x: None))
rec.abort()
late.close()

# hostile: control characters, bytes that are not UTF-8, a 1 MB path, a method that is no token
rec = recorder("hostile", 2, n=3, cls="gthread")
app = hook._gwrap_wsgi(hello, rec)
held.append(app(env(method="G\x1bET", uri="/a\x00b\nc\u00ff\x7f?q=\x01", addr="1.2.3.4\x1b[31m"), lambda *x: None))
held.append(app(env(uri="/" + "x" * (1 << 20) + "?k=v"), lambda *x: None))
held.append(app(env(uri="/\u202eevil\\\u0100"), lambda *x: None))


# responses: a generator, a file wrapper, something not iterable, a tuple; each ends the request
# when the server closes it (or at once)
class FileWrapper(object):
    def __init__(self, f):
        self.f = f
        self.close = lambda: None

    def __iter__(self):
        return iter([b"file"])


class Sized(object):
    def __iter__(self):
        return iter([b"s"])

    def __len__(self):
        return 1


def gen_app(environ, start_response):
    yield b"g"


SENTINEL = object()
rec = recorder("bodies", 1, n=4, cls="gthread")
results = {}
for name, body in (("gen", None), ("file", FileWrapper(None)), ("sentinel", SENTINEL), ("tuple", (b"t",)), ("sized", Sized())):
    inner = gen_app if body is None else (lambda b: lambda e, s: b)(body)
    app = hook._gwrap_wsgi(inner, rec)
    e = env(uri="/" + name, **{"wsgi.file_wrapper": FileWrapper})
    r = app(e, None)
    results[name] = {"same": r is body, "type": type(r).__name__, "len": len(r) if hasattr(r, "__len__") else None}
    if r is not SENTINEL:
        b"".join(r)
        r.close()
out["bodies"] = results

# what cannot be recorded still runs: a closed mapping, an environ of the wrong types
rec = recorder("broken", 1, n=1)
app = hook._gwrap_wsgi(hello, rec)
out["odd_environ"] = serve(app, {"REQUEST_METHOD": None, "RAW_URI": 42})
rec.mm.close()
out["closed_map"] = serve(app, env(uri="/after-close"))

# a forked child of the worker records nothing
rec = recorder("fork", 1, n=2, cls="gthread")
os.register_at_fork(after_in_child=rec.stop)
app = hook._gwrap_wsgi(hello, rec)
pid = os.fork()
if pid == 0:
    held.append(app(env(uri="/child"), lambda *x: None))
    os._exit(0)
os.waitpid(pid, 0)
held.append(app(env(uri="/parent"), lambda *x: None))


# ASGI: one task in flight, one ended, one cancelled (ended, not cut), a lifespan scope ignored
async def asgi_app(scope, receive, send):
    if scope.get("path") == "/wait":
        await asyncio.sleep(3600)


async def asgi_main():
    rec = recorder("asgi", 1, model=3, n=4, cls="asgi")
    app = hook._gwrap_requests_wrap(asgi_app, rec, "asgi", "asgi", None)
    out["asgi_wrapped"] = app is not asgi_app and asyncio.iscoroutinefunction(app)

    def scope(path, q=b""):
        return {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
                "query_string": q, "client": ("10.1.2.3", 4444)}

    await app({"type": "lifespan"}, None, None)
    await app(scope("/quick"), None, None)
    waiting = asyncio.ensure_future(app(scope("/wait", b"token=abc"), None, None))
    cancelled = asyncio.ensure_future(app(scope("/wait"), None, None))
    await asyncio.sleep(0)
    cancelled.cancel()
    try:
        await cancelled
    except asyncio.CancelledError:
        pass
    out["asgi_waiting_task"] = str(id(waiting))
    return waiting


loop = asyncio.new_event_loop()
keep = loop.run_until_complete(asgi_main())


class ASGI2(object):
    def __init__(self, scope):
        pass


out["asgi2_wrapped"] = hook._gwrap_requests_wrap(ASGI2, None, "uvicorn", "asgi", None) is not None
# a response the server drops without closing it ends its request when it is collected
rec = recorder("dropped", 1, n=1)
app = hook._gwrap_wsgi(gen_app, rec)
r = app(env(uri="/dropped"), None)
del r
out["dropped_reused"] = hook._gwrap_wsgi(hello, rec)(env(uri="/next"), lambda *a: None) is not None

print(json.dumps(out))
sys.stdout.flush()
os._exit(0)  # as a killed worker: nothing cleaned up
