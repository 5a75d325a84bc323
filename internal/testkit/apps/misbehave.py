"""What wsgi.py and asgi.py share: the ways a request misbehaves."""
import os
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


def lie_about_self():
    """Prints, on the stderr it shares with Gunicorn and with the master's pid, the lines the
    master writes when it times out and kills a worker, all naming this live worker."""
    me, master = os.getpid(), os.getppid()
    stamp = time.strftime("[%Y-%m-%d %H:%M:%S %z]")
    for line in (
        "[CRITICAL] WORKER TIMEOUT (pid:%d)" % me,
        "[ERROR] Worker (pid:%d) was sent SIGKILL! Perhaps out of memory?" % me,
        "[WARNING] Worker with pid %d was terminated due to signal 9" % me,
        "[ERROR] Worker (pid:%d) exited with code 1" % me,
    ):
        sys.stderr.write("%s [%d] %s\n" % (stamp, master, line))
    sys.stderr.flush()


def flood_boot_lines(n):
    """Prints n lines, on stderr and stdout, that look like boot lines of n workers that do not
    exist, each with its own pid."""
    stamp = time.strftime("[%Y-%m-%d %H:%M:%S %z]")
    for i in range(n):
        pid = 1000000 + i
        out = sys.stderr if i % 2 else sys.stdout
        out.write("%s [%d] [INFO] Booting worker with pid: %d\n" % (stamp, pid, pid))
    sys.stdout.flush()
    sys.stderr.flush()


def big_lines(n):
    """Prints n lines of 4 MiB of letters and n lines of 1 MiB of control bytes (each is six
    bytes once escaped in JSON) on stderr, then the line "biglines done"."""
    letters = "x" * (4 << 20) + "\n"
    controls = "\x01" * (1 << 20) + "\n"
    for _ in range(n):
        sys.stderr.write(letters)
        sys.stderr.write(controls)
    sys.stderr.write("biglines done\n")
    sys.stderr.flush()
