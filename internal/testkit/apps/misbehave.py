"""What wsgi.py and asgi.py share: the ways a request misbehaves."""
import sys
import time


def blocking_sleep(seconds):
    """Sleeps blocking the whole thread, even when gevent has patched time.sleep."""
    sleep = time.sleep
    if "gevent.monkey" in sys.modules:
        import gevent.monkey

        if gevent.monkey.is_module_patched("time"):
            sleep = gevent.monkey.get_original("time", "sleep")
    sleep(seconds)


def spin(seconds):
    """Computes in the Python interpreter for seconds."""
    end = time.time() + seconds
    n = 0
    while time.time() < end:
        n += 1
    return n


def cloop():
    """Computes in C for minutes without giving the interpreter a chance to run a signal handler."""
    return sum(range(10**11))


def hoard_mib(hoard, mib):
    """Allocates mib MiB, touching every page, and keeps them."""
    for _ in range(mib):
        hoard.append(b"x" * (1 << 20))


def cgroup_value(name):
    """Reads a file of this process's v1 memory cgroup as an int."""
    for line in open("/proc/self/cgroup"):
        _, ctrls, path = line.strip().split(":", 2)
        if "memory" in ctrls.split(","):
            with open("/sys/fs/cgroup/memory" + path + "/" + name) as f:
                return int(f.read())
    raise RuntimeError("no v1 memory cgroup")
