"""The WSGI app gwrap's live tests run (every release, every WSGI worker class).

Each route misbehaves in one way gwrap must explain; the query string is the route's argument.
Under gevent the blocking routes use the unpatched functions, so that they block the worker's
loop as they would block a sync worker. /dirty/ACTION?ARG calls dirty.py's Heavy.ACTION in a
Gunicorn dirty worker (25+) and waits for it; /dirty-bg/ACTION?ARG makes the same call from a
thread of its own and answers at once.
"""
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

from misbehave import big_lines, blocking_sleep, cgroup_value, cloop, flood_boot_lines, hoard_mib, lie_about_self, spin

hoard = []


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = environ.get("QUERY_STRING", "")
    body = b"ok\n"
    if path == "/pid":
        body = b"%d\n" % os.getpid()
    elif path == "/sleep":  # waits: past --timeout, `blocked` (threaded workers keep beating)
        blocking_sleep(float(q or 60))
    elif path == "/csleep":  # waits the app's way: cooperatively under gevent (patched time.sleep)
        time.sleep(float(q or 60))
    elif path == "/spin":  # computes in Python: `cpu_bound`
        spin(float(q or 60))
    elif path == "/cloop":  # computes in C holding the GIL: no Python signal handler can run
        cloop()
    elif path == "/alloc":  # allocates and keeps MiB: under a memory limit, an OOM kill
        hoard_mib(hoard, int(q or 100))
    elif path == "/pressure":  # holds the cgroup at 93 % of its limit, then waits
        limit = cgroup_value("memory.limit_in_bytes")
        while cgroup_value("memory.usage_in_bytes") < 0.93 * limit:
            hoard.append(b"x" * (2 << 20))
        blocking_sleep(float(q or 60))
    elif path == "/connect":  # waits on a TCP peer that never answers: `blocked`, naming the peer
        host, port = q.rsplit(":", 1)
        socket.create_connection((host, int(port))).recv(1)
    elif path == "/grow":  # allocates MiB a second (default 160), in 8 MiB steps, until killed
        rate = float(q or 160)
        while True:
            hoard_mib(hoard, 8)
            time.sleep(8 / rate)
    elif path == "/lie":  # waits seconds, then prints the master's kill lines about itself
        blocking_sleep(float(q or 0))
        lie_about_self()
    elif path == "/flood":  # prints N lines that look like boot lines of N other workers
        flood_boot_lines(int(q or 100000))
    elif path == "/biglines":  # prints N lines of 4 MiB and N of 1 MiB of control bytes
        big_lines(int(q or 8))
    elif path == "/child":  # waits for a child (cmd=sleep+40), holding a UDP socket connected to udp=HOST:PORT
        args = urllib.parse.parse_qs(q)
        if "udp" in args:
            host, port = args["udp"][0].rsplit(":", 1)
            peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            peer.connect((host, int(port)))
        subprocess.run(shlex.split(args.get("cmd", ["sleep 40"])[0]))
    elif path == "/print":  # writes a line to stderr ending with the time it was written (Unix seconds)
        sys.stderr.write("%s %.6f\n" % (q, time.time()))
        sys.stderr.flush()
    elif path == "/kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif path == "/segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif path == "/exit":
        os._exit(7)
    elif path == "/abort":
        os.abort()
    elif path.startswith("/dirty/"):  # waits on a dirty worker, as an app's view does
        body = b"%r\n" % (dirty_call(path[len("/dirty/"):], q),)
    elif path.startswith("/dirty-bg/"):  # the same call from a thread: the worker answers at once
        threading.Thread(target=dirty_call, args=(path[len("/dirty-bg/"):], q), daemon=True).start()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def dirty_call(action, q):
    """Calls dirty.py's Heavy.ACTION(q) through Gunicorn's dirty client; an error is the result."""
    from gunicorn.dirty import get_dirty_client

    args = [float(q)] if q else []
    try:
        return get_dirty_client(timeout=120).execute("dirty:Heavy", action, *args)
    except Exception as e:  # DirtyTimeoutError, DirtyWorkerError…: the caller's answer
        return "%s: %s" % (type(e).__name__, e)
