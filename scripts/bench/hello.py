"""The hello-world app of scripts/bench.sh's request-recording figures (WSGI)."""


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world\n"]
