"""The app of gwrap's memory tests (recycling, the forecast, the fast fill), on cgroup v1 and v2.

/leak?N     keeps N MiB (default 1) in the worker for good, as a cache that never evicts would:
            under a memory limit and a steady stream of requests, the container's working set
            climbs until a worker is recycled or OOM-killed.
/hold?SHARE keeps memory in the worker until the container's working set (usage − inactive
            file, as gwrap reads it) reaches SHARE of the limit (default 0.5), then answers with
            the working set in bytes.
/fill?MS    from there, allocates up to the limit, and past it (an OOM kill), in 4 MiB steps
            paced evenly over MS milliseconds (default 450): a fill from half the limit to the
            limit within 500 ms. It answers only if the fill stopped short of the limit.
/pid        the worker's pid.
"""
import os
import time

hoard = []


def _cgroup_dir():
    """The memory cgroup's directory: v1's memory controller, or the v2 unified cgroup."""
    for line in open("/proc/self/cgroup"):
        _, ctrls, path = line.strip().split(":", 2)
        if "memory" in ctrls.split(","):
            return "/sys/fs/cgroup/memory" + path, 1
    for line in open("/proc/self/cgroup"):
        if line.startswith("0::"):
            return "/sys/fs/cgroup" + line.strip()[3:], 2
    raise RuntimeError("no memory cgroup")


def _read(d, name):
    with open(os.path.join(d, name)) as f:
        return f.read().strip()


def limit():
    d, v = _cgroup_dir()
    return int(_read(d, "memory.limit_in_bytes" if v == 1 else "memory.max"))


def working_set():
    d, v = _cgroup_dir()
    stat = dict(line.split() for line in _read(d, "memory.stat").splitlines())
    if v == 1:
        return int(_read(d, "memory.usage_in_bytes")) - int(stat["total_inactive_file"])
    return int(_read(d, "memory.current")) - int(stat["inactive_file"])


def keep(mib):
    """Allocates mib MiB, touching every page, and keeps them."""
    for _ in range(mib):
        hoard.append(b"x" * (1 << 20))


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = environ.get("QUERY_STRING", "")
    body = b"ok\n"
    if path == "/leak":
        keep(int(q or 1))
    elif path == "/hold":
        share = float(q or 0.5)
        lim = limit()
        while working_set() < share * lim:
            keep(2)
        body = b"%d\n" % working_set()
    elif path == "/fill":
        ms = float(q or 450)
        lim = limit()
        steps = max(1, (lim - working_set()) // (4 << 20))
        start = time.monotonic()
        for i in range(steps + 64):  # past the limit: the OOM killer ends it
            keep(4)
            wait = start + (i + 1) * ms / 1000 / steps - time.monotonic()
            if wait > 0:
                time.sleep(wait)
    elif path == "/pid":
        body = b"%d\n" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
