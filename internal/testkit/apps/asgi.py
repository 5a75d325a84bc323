"""The ASGI app gwrap's live tests run under uvicorn.workers.UvicornWorker.

Routes as in wsgi.py; /sleep blocks the event loop with a synchronous sleep, /asleep awaits
asyncio.sleep (the loop keeps running, the worker keeps beating).
"""
import asyncio
import os

from misbehave import blocking_sleep, cloop, hoard_mib, spin

hoard = []


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    q = scope.get("query_string", b"").decode()
    body = b"ok\n"
    if path == "/pid":
        body = b"%d\n" % os.getpid()
    elif path == "/sleep":
        blocking_sleep(float(q or 60))
    elif path == "/asleep":
        await asyncio.sleep(float(q or 60))
    elif path == "/spin":
        spin(float(q or 60))
    elif path == "/cloop":
        cloop()
    elif path == "/alloc":
        hoard_mib(hoard, int(q or 100))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
