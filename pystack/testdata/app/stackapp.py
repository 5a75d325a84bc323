# The app of pystack's live tests. Each route blocks a worker a different way; the line that
# blocks carries a "# at:NAME" marker the tests look up. Before blocking, a route creates
# $READY_DIR/NAME so the test knows the worker got the request.
import ctypes
import os
import socket
import sys
import time


def ready(name):
    open(os.path.join(os.environ["READY_DIR"], name), "w").close()


def sleep_long():
    ready("sleep")
    time.sleep(600)  # at:sleep


def burn():
    ready("cpu")
    return sum(range(10**11))  # at:cpu


def read_upstream():
    s = socket.create_connection(("127.0.0.1", int(os.environ["UPSTREAM_PORT"])))
    ready("upstream")
    return s.recv(1)  # at:upstream


def crash():
    ready("segv")
    ctypes.string_at(0)  # at:segv


def talk():
    sys.stdout.write("app stdout line\n")
    sys.stdout.flush()
    sys.stderr.write("app stderr line \xe9\n")
    sys.stderr.flush()
    print("pid-free line from", __name__)


ROUTES = {"/sleep": sleep_long, "/cpu": burn, "/upstream": read_upstream, "/segv": crash, "/talk": talk}


def app(environ, start_response):
    fn = ROUTES.get(environ["PATH_INFO"])
    if fn:
        fn()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/block":
        ready("block")
        time.sleep(600)  # at:block
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok\n"})
