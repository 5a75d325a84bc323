"""Gunicorn's documented "Custom Application": `python3 server.py` runs the shared WSGI app in a
BaseApplication subclass whose settings are set in Python, where no command line shows them.

The settings are the JSON object in SERVER_OPTIONS (Gunicorn's setting names, e.g.
{"bind": "127.0.0.1:8000", "timeout": 3}), so that each test can choose them.
"""
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gunicorn.app.base import BaseApplication  # noqa: E402

from wsgi import app  # noqa: E402


class Server(BaseApplication):
    def __init__(self, application, options):
        self.application = application
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key.lower(), value)

    def load(self):
        return self.application


if __name__ == "__main__":
    Server(app, json.loads(os.environ.get("SERVER_OPTIONS", "{}"))).run()
