"""A small WSGI app for trying gwrap: each route misbehaves in one way gwrap explains."""
import os
import signal
import socket
import time

from flask import Flask, request

app = Flask(__name__)
_hoard = []


@app.route("/")
def index():
    return "ok\n"


@app.route("/sleep")
def sleep():
    """Waits: past --timeout this is a `blocked` worker."""
    time.sleep(float(request.args.get("s", "60")))
    return "slept\n"


@app.route("/spin")
def spin():
    """Computes: past --timeout this is a `cpu_bound` worker."""
    end = time.time() + float(request.args.get("s", "60"))
    n = 0
    while time.time() < end:
        n += 1
    return f"spun {n}\n"


@app.route("/alloc")
def alloc():
    """Allocates MiB and keeps them: under a memory limit this ends in an OOM kill."""
    mb = int(request.args.get("mb", "100"))
    for _ in range(mb):
        _hoard.append(bytearray(1 << 20))
    return f"holding {len(_hoard)} MiB\n"


@app.route("/connect")
def connect():
    """Connects to host:port and waits for an answer that never comes: `blocked`, naming the peer."""
    host, port = request.args.get("to", "127.0.0.1:9").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as s:
        s.recv(1)
    return "answered\n"


@app.route("/crash")
def crash():
    """Dies of SIGSEGV: a `crashed` worker."""
    os.kill(os.getpid(), signal.SIGSEGV)
    return "unreachable\n"
