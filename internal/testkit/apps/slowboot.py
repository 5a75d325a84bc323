"""An app whose import takes SLOWBOOT_SECONDS (default 60): a worker stuck booting.

`slowboot:app` is the WSGI app, `slowboot:asgi` the ASGI one.
"""
import os
import time

time.sleep(float(os.environ.get("SLOWBOOT_SECONDS", "60")))

from asgi import app as asgi  # noqa: E402
from wsgi import app  # noqa: E402,F401
