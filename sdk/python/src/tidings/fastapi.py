"""FastAPI (or plain Starlette) helpers: a dependency that verifies a webhook request and
returns its typed event, and :class:`ProxyRouter`, which answers the server's back-end proxy
calls (:mod:`tidings.proxy`). Needs the ``fastapi`` extra
(``pip install "tidings-sdk[fastapi]"``); ``import tidings`` alone never imports FastAPI, nor
does ``import tidings.fastapi`` until ``ProxyRouter`` is used.

.. code-block:: python

    from fastapi import Depends, FastAPI
    from tidings.fastapi import webhook_event
    from tidings.webhooks import WebhookEvent

    app = FastAPI()

    @app.post("/tidings-events")
    async def receive(event: WebhookEvent = Depends(webhook_event(SECRET))):
        ...

A request with a missing, malformed, wrong or stale signature is answered ``400`` (the
server then retries it with backoff); one that verifies but is not an event, ``422``.

.. code-block:: python

    from tidings.fastapi import ProxyRouter
    from tidings.proxy import ConnectRequest, Refused, RpcRequest, SubscribeRequest

    router = ProxyRouter(secret=PROXY_SECRET, prefix="/tidings")

    @router.on_connect
    def connect(request: ConnectRequest):
        if request.user_id is None:                      # no token: a session cookie?
            return user_of_session(request.cookie("session")) or False

    @router.on_subscribe
    def subscribe(request: SubscribeRequest):
        if not may_read(request.user_id, request.channel):
            raise Refused("not your ticket")

    @router.rpc("motivation_requested")
    async def motivation(request: RpcRequest):
        return {"message": f"Keep going, {request.user_id}!"}

    app.include_router(router)
"""

# No `from __future__ import annotations` here: FastAPI reads the dependency's annotation
# at run time, and `Request` is imported lazily, inside `webhook_event`.
from typing import TYPE_CHECKING, Any, Awaitable, Callable, List, Optional, Tuple, Union

from .errors import WebhookSignatureError
from .webhooks import DEFAULT_TOLERANCE, SIGNATURE_HEADER, WebhookEvent, construct_event

if TYPE_CHECKING:  # pragma: no cover
    from starlette.requests import Request

    from ._proxy_router import ProxyRouter

__all__ = ["webhook_event", "verify_request", "ProxyRouter"]

Secret = Union[str, bytes, List[Union[str, bytes]], Tuple[Union[str, bytes], ...]]


async def verify_request(
    request: "Request",
    secret: Secret,
    *,
    tolerance: Optional[float] = DEFAULT_TOLERANCE,
) -> WebhookEvent:
    """Reads the request's raw body, verifies its signature and returns the event; raises
    ``fastapi.HTTPException`` (400 or 422) otherwise."""
    from fastapi import HTTPException  # lazy: fastapi is an optional extra

    body = await request.body()
    header = request.headers.get(SIGNATURE_HEADER)
    try:
        return construct_event(secret, header, body, tolerance=tolerance)
    except WebhookSignatureError as error:
        raise HTTPException(status_code=400, detail=f"invalid webhook signature: {error}") from error
    except ValueError as error:
        raise HTTPException(status_code=422, detail=str(error)) from error


def webhook_event(
    secret: Secret,
    *,
    tolerance: Optional[float] = DEFAULT_TOLERANCE,
) -> Callable[["Request"], Awaitable[WebhookEvent]]:
    """A FastAPI dependency (``Depends(webhook_event(secret))``) giving the verified event."""
    try:
        from starlette.requests import Request
    except ImportError as error:  # pragma: no cover
        raise ImportError(
            'tidings.fastapi needs FastAPI: pip install "tidings-sdk[fastapi]"'
        ) from error

    async def dependency(request: Request) -> Any:
        return await verify_request(request, secret, tolerance=tolerance)

    return dependency


def __getattr__(name: str) -> Any:
    # `ProxyRouter` subclasses FastAPI's APIRouter: imported on first use only.
    if name == "ProxyRouter":
        try:
            from ._proxy_router import ProxyRouter
        except ModuleNotFoundError as error:  # pragma: no cover
            if error.name in ("fastapi", "starlette"):
                raise ImportError(
                    'tidings.fastapi.ProxyRouter needs FastAPI: pip install "tidings-sdk[fastapi]"'
                ) from error
            raise
        return ProxyRouter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
