"""The dirty app gwrap's live tests run in Gunicorn's dirty workers (Gunicorn 25+, `--dirty-app
dirty:Heavy`), called from wsgi.py's /dirty/ routes.

Each action misbehaves in one way gwrap must explain. Gunicorn's own DirtyApp.__call__ dispatches
to them by name, as it does for users' apps. init() fails while the file named by
DIRTY_BOOT_FAIL exists: a dirty worker that cannot boot (Gunicorn's dirty arbiter then respawns
it, and it fails again, until the file is removed).
"""
import os
import time

from gunicorn.dirty import DirtyApp

from misbehave import cloop, hoard_mib, spin


class Heavy(DirtyApp):
    def init(self):
        self.hoard = []
        flag = os.environ.get("DIRTY_BOOT_FAIL")
        if flag and os.path.exists(flag):
            raise RuntimeError("the model file is missing")

    def pid(self):
        return os.getpid()

    def spin(self, seconds):
        """Computes in Python for seconds."""
        return spin(seconds)

    def sleep(self, seconds):
        """Waits for seconds."""
        time.sleep(seconds)
        return seconds

    def cloop(self):
        """Computes in C holding the GIL: the worker's own loop cannot beat."""
        return cloop()

    def alloc(self, mib):
        """Allocates mib MiB and keeps them: a model too large for the container."""
        hoard_mib(self.hoard, int(mib))
        return len(self.hoard)
