"""What recording a request costs the worker, in µs: scripts/bench.sh's microbenchmark.

python3 reqcost.py HOOK DIR: loads gwrap's hook (pystack/sitecustomize.py) as a module, makes a
request file in DIR as a worker does, and times a hello-world WSGI app served as Gunicorn serves
it (call, iterate, close), bare and wrapped, and an ASGI app awaited, bare and wrapped; prints the
difference per request (the best of several runs of each, so that other load adds nothing).
"""
import asyncio
import importlib.util
import os
import sys
import timeit

spec = importlib.util.spec_from_file_location("gwrap_hook", sys.argv[1])
hook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hook)
D = sys.argv[2]
N = 200000


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world\n"]


def start_response(status, headers):
    pass


def served(app, environ):
    def one():
        body = app(environ, start_response)
        try:
            for _ in body:
                pass
        finally:
            if hasattr(body, "close"):
                body.close()
    return one


def best(fn):
    return min(timeit.repeat(fn, number=N, repeat=7)) / N * 1e6


def env(uri):
    return {"REQUEST_METHOD": "GET", "RAW_URI": uri, "PATH_INFO": uri.split("?")[0], "QUERY_STRING": "",
            "REMOTE_ADDR": "10.0.0.7", "REMOTE_PORT": "51234", "wsgi.file_wrapper": object}


def recorder(mode, model=1, n=1, cls="sync"):
    return hook._GwrapRequests.create(D, mode, cls, model, n)


bare = best(served(hello, env("/")))
print("WSGI hello world served bare: %.2f µs a request" % bare)
for name, uri, mode in (("/", "/", 1), ("/items?id=42&sort=name, names", "/items?id=42&sort=name", 1),
                        ("/items?id=42&sort=name, full", "/items?id=42&sort=name", 2)):
    t = best(served(hook._gwrap_wsgi(hello, recorder(mode)), env(uri)))
    print("  recorded (%s): +%.2f µs a request" % (name, t - bare))


async def asgi_hello(scope, receive, send):
    pass


async def loop_of(app, scope):
    for _ in range(N):
        await app(scope, None, None)


def asgi_best(app, scope):
    loop = asyncio.new_event_loop()
    try:
        return min(timeit.repeat(lambda: loop.run_until_complete(loop_of(app, scope)), number=1, repeat=7)) / N * 1e6
    finally:
        loop.close()


scope = {"type": "http", "method": "GET", "path": "/", "raw_path": b"/", "query_string": b"", "client": ("10.0.0.7", 51234)}
abare = asgi_best(asgi_hello, scope)
wrapped = hook._gwrap_requests_wrap(asgi_hello, recorder(1, model=3, n=64, cls="asgi"), "asgi", "asgi", None)
print("ASGI app awaited bare: %.2f µs; recorded: +%.2f µs a request" % (abare, asgi_best(wrapped, scope) - abare))
