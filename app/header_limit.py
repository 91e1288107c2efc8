"""Refuses requests whose headers are too large (431), before any route or dependency runs.

uvicorn's default HTTP parser (httptools) accepts headers of any size, so this is the service's
own limit. It answers after the server has read the headers: a proxy in front (nginx's
``large_client_header_buffers``) is what bounds the memory they take.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class HeaderLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) for name, value in scope["headers"])
            if size > self.max_bytes:
                response = JSONResponse(
                    {
                        "detail": f"the request headers take {size} bytes, over the limit of "
                        f"{self.max_bytes}"
                    },
                    status_code=431,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
