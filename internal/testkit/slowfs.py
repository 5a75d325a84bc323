"""A FUSE file system whose every write is slow: a stand-in for a hung or slow network share.

    python3 slowfs.py MOUNTPOINT -o backing=DIR,delay=SECONDS [-f]

It passes every operation through to the directory DIR, and waits SECONDS before each one that
changes something (create, mkdir, write, truncate, fsync, flush of a written file, rename,
unlink, rmdir, chmod, utime): App Service's /home is an SMB share, and a share that stalls makes
exactly these calls hang. Lookups, reads and directory listings stay fast, so the test itself
can look at what got written. It serves every call on its own thread: a waiting write does not
hold up the others.

A wait ends early, with EINTR, once the calling process is being killed (a SIGKILL pending, as
for every thread of a process that exits): the kernel's SMB and NFS clients wait killably, so a
process stuck in a write to a stalled share can still exit. A FUSE request already handed to the
daemon is not killable by itself (the kernel waits for its answer), so without this the test
would measure a hold-up no real share causes.
"""
import errno
import os
import sys
import time

import fuse

fuse.fuse_python_api = (0, 2)


SIGKILL_BIT = 1 << 8


def dying(pid):
    """Whether the process (or thread) pid is gone or has a SIGKILL pending."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("SigPnd", "ShdPnd") and int(value.strip(), 16) & SIGKILL_BIT:
                    return True
    except (OSError, ValueError):
        return True
    return False


def slow():
    """Waits SlowFS.delay seconds, or fails with EINTR once the caller is being killed."""
    pid = SlowFS.server.GetContext().get("pid", 0)
    end = time.monotonic() + SlowFS.delay
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        if pid and dying(pid):
            raise OSError(errno.EINTR, "the caller is being killed")
        time.sleep(min(left, 0.02))


class SlowFS(fuse.Fuse):
    delay = 10.0
    backing = "/"
    server = None

    def real(self, path):
        return os.path.join(SlowFS.backing, path.lstrip("/"))

    def getattr(self, path):
        return os.lstat(self.real(path))

    def readlink(self, path):
        return os.readlink(self.real(path))

    def readdir(self, path, offset):
        for name in [".", ".."] + os.listdir(self.real(path)):
            yield fuse.Direntry(name)

    def statfs(self):
        return os.statvfs(SlowFS.backing)

    def mkdir(self, path, mode):
        slow()
        os.mkdir(self.real(path), mode)

    def rmdir(self, path):
        slow()
        os.rmdir(self.real(path))

    def unlink(self, path):
        slow()
        os.unlink(self.real(path))

    def rename(self, old, new):
        slow()
        os.rename(self.real(old), self.real(new))

    def symlink(self, target, path):
        slow()
        os.symlink(target, self.real(path))

    def link(self, target, path):
        slow()
        os.link(self.real(target), self.real(path))

    def chmod(self, path, mode):
        slow()
        os.chmod(self.real(path), mode)

    def chown(self, path, uid, gid):
        slow()
        os.chown(self.real(path), uid, gid)

    def truncate(self, path, length):
        slow()
        os.truncate(self.real(path), length)

    def utime(self, path, times):
        slow()
        os.utime(self.real(path), times)

    def utimens(self, path, ts_acc, ts_mod):
        slow()
        os.utime(self.real(path), ns=(ts_acc.tv_sec * 10**9 + ts_acc.tv_nsec, ts_mod.tv_sec * 10**9 + ts_mod.tv_nsec))

    def main(self, *a, **kw):
        fs = self

        class File:
            """One open file of the share."""

            def __init__(self, path, flags, *mode):
                if flags & os.O_CREAT or flags & os.O_TRUNC:
                    slow()
                self.fd = os.open(fs.real(path), flags, *mode)
                self.dirty = False

            def read(self, length, offset):
                return os.pread(self.fd, length, offset)

            def write(self, buf, offset):
                slow()
                self.dirty = True
                return os.pwrite(self.fd, buf, offset)

            def fgetattr(self):
                return os.fstat(self.fd)

            def ftruncate(self, length):
                slow()
                os.ftruncate(self.fd, length)

            def fsync(self, isfsyncfile):
                slow()
                os.fsync(self.fd)

            def flush(self):
                if self.dirty:
                    slow()
                    self.dirty = False

            def release(self, flags):
                os.close(self.fd)

        self.file_class = File
        return fuse.Fuse.main(self, *a, **kw)


def main():
    server = SlowFS(version="%prog " + fuse.__version__, usage=__doc__, dash_s_do="setsingle")
    server.multithreaded = True
    server.parser.add_option(mountopt="delay", metavar="SECONDS", default="10", help="seconds each change takes")
    server.parser.add_option(mountopt="backing", metavar="DIR", help="the directory served")
    server.parse(values=server, errex=1)
    SlowFS.server = server
    SlowFS.delay = float(server.delay)
    SlowFS.backing = os.path.abspath(server.backing)
    if not os.path.isdir(SlowFS.backing):
        print("slowfs: backing %r is not a directory" % SlowFS.backing, file=sys.stderr)
        sys.exit(errno.ENOTDIR)
    server.main()


if __name__ == "__main__":
    main()
