"""The app's outer layer: request bodies held to a size while they stream in, and every failure answered
on a connection that stays usable.

Starlette checks neither: a chunked upload (no Content-Length) was read in full, 80 MB, before the
handler could refuse it, and an unexpected exception went to Starlette's outermost error handler,
which answers 500 and then re-raises, so uvicorn closed the keep-alive connection behind it. `Guard`
sits inside that handler and answers both itself, as `{"error": "<one line>"}`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]

LOG = logging.getLogger("kdsam.serve")


class BodyTooLarge(Exception):
    """Raised inside the app's `receive` once a streamed body passes the limit; `Guard` answers 413."""


async def send_error(send: Send, status: int, message: str, close: bool = False) -> None:
    """A complete JSON error response; `close` adds Connection: close (the rest of a body stays unread)."""
    body = json.dumps({"error": " ".join(message.split())}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Message, name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == name), "")


class Guard:
    """ASGI middleware. `max_body(content_type)` is the byte limit of a request's body: over it, 413
    at once when Content-Length declares it, else as soon as the streamed body passes it, without
    reading the rest. An exception the app's handlers did not turn into a response becomes a 500
    with its one line, logged with its traceback, and the server keeps the connection."""

    def __init__(self, app: ASGIApp, max_body: Callable[[str], int]) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body(_header(scope, b"content-type"))
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            await send_error(send, 413, f"request of {declared} bytes is over the {limit} byte limit", close=True)
            return
        state = {"received": 0, "over": False, "started": False}

        async def counted() -> Message:
            message = await receive()
            state["received"] += len(message.get("body", b""))
            if state["received"] > limit:
                state["over"] = True
                raise BodyTooLarge
            return message

        async def tracked(message: Message) -> None:
            if state["over"]:
                return  # whatever the app answers to a body cut short, the answer is the 413 below
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except Exception as err:
            if state["over"]:
                pass
            elif state["started"]:
                raise  # half a response is out: only closing the connection can tell the client
            else:
                LOG.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
                await send_error(send, 500, f"internal error ({type(err).__name__}: {err}); the server keeps running")
                return
        if state["over"] and not state["started"]:
            message = f"request body over the {limit} byte limit (sent without a Content-Length)"
            await send_error(send, 413, message, close=True)
