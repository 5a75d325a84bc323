# A worker that never finishes booting: the import of the app sleeps (a slow model load, a
# database that does not answer at import).
import os
import time

open(os.path.join(os.environ["READY_DIR"], "boot"), "w").close()
time.sleep(600)  # at:boot


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"never\n"]
