"""A request body read once, bounded in bytes and in time, then handed on: the ASGI step both HTTP services share.

The serving API (`softprompt.serving.app`) and the forward-only model endpoint (`softprompt.remote.server`) refuse
an oversized or too-slow body before any handler runs. Their middleware reads the body itself with `read_body`:

    413  the declared Content-Length, or the bytes counted as they arrive (a chunked upload has no length), > max_bytes
    408  the whole body has not arrived within timeout_s of the first read (a client that sends a little and stalls)

and passes the app a `Replay` of it, so the app reads exactly the body it would have read. After a refusal the rest
of the body is unread, so the answer must close the connection (`CLOSE`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

CLOSE = {"connection": "close"}  # headers of a refusal: the unread rest of the body must not start a next request


@dataclass(frozen=True)
class Refusal:
    status: int  # 400, 408 or 413
    detail: str


class Disconnected(Exception):
    """The client went away before its body was complete: there is no one to answer."""


async def read_body(receive: Receive, declared: str | None, max_bytes: int, timeout_s: float) -> bytes | Refusal:
    """The whole body, or why not. `declared` is the Content-Length header (None when absent)."""
    if declared is not None:
        if not declared.strip().isdigit():
            return Refusal(400, f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > max_bytes:
            return Refusal(413, f"request body of {int(declared)} bytes exceeds the limit of {max_bytes} bytes")
    body = bytearray()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            return Refusal(408, f"the request body did not arrive within {timeout_s:g} s")
        if message["type"] == "http.disconnect":
            raise Disconnected
        body += message.get("body", b"")
        if len(body) > max_bytes:
            return Refusal(413, f"request body exceeds the limit of {max_bytes} bytes")
        if not message.get("more_body", False):
            return bytes(body)


@dataclass
class Replay:
    """An ASGI `receive` that gives the app the body already read, then waits on the real one (for the disconnect)."""

    body: bytes
    receive: Receive
    sent: bool = False

    async def __call__(self) -> dict[str, Any]:
        if self.sent:
            return await self.receive()
        self.sent = True
        return {"type": "http.request", "body": self.body, "more_body": False}
