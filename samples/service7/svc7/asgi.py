"""Sample ASGI service (Starlette): JSON over HTTP and a WebSocket echo.

Behind the gateway the app gets ``root_path`` = its route, so every URL it builds (``url_for``)
carries the prefix. ``MICROSVC_RELEASE`` and ``GREETING`` are shown when set; ``ASGI_BROKEN``
makes the import fail (a broken release, for the rollback tests).
"""

import os
import socket

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

if os.environ.get("ASGI_BROKEN"):
    raise RuntimeError("ASGI_BROKEN is set: this release does not start")


async def index(request):
    return JSONResponse({
        "service": "service7",
        "framework": "starlette",
        # Which app host answered (the split layout balances between them).
        "host": socket.gethostname(),
        "release": os.environ.get("MICROSVC_RELEASE", ""),
        "greeting": os.environ.get("GREETING", ""),
        "root_path": request.scope.get("root_path", ""),
        "links": {"health": str(request.url_for("health")), "echo": str(request.url_for("echo"))},
    })


async def health(request):
    return JSONResponse({"status": "ok", "service": "service7"})


async def echo(websocket):
    """Sends back every text message; a client's close ends it."""
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await websocket.send_text(message["text"])
        elif message.get("bytes") is not None:
            await websocket.send_bytes(message["bytes"])


application = Starlette(routes=[
    Route("/", index, name="index"),
    Route("/health", health, name="health"),
    WebSocketRoute("/ws", echo, name="echo"),
])
