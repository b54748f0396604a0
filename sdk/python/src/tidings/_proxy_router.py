"""``tidings.fastapi.ProxyRouter``: the server's proxy calls answered by decorated handlers.
Imported only when ``tidings.fastapi.ProxyRouter`` is first used (FastAPI is an extra)."""

import inspect
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .errors import ProxyRequestError, WebhookSignatureError
from .models import Event
from .proxy import (
    PROXY_KINDS,
    ProxyAnswer,
    ProxyRequest,
    Refused,
    RpcRequest,
    admit,
    allow,
    deny,
    replace,
    rpc_error,
    rpc_result,
    verify_and_parse,
)
from .webhooks import DEFAULT_TOLERANCE

__all__ = ["ProxyRouter"]

Secret = Union[str, bytes, List[Union[str, bytes]], Tuple[Union[str, bytes], ...]]
Handler = TypeVar("Handler", bound=Callable[..., Any])


class ProxyRouter(APIRouter):
    """An ``APIRouter`` serving ``POST {prefix}/connect``, ``/subscribe``, ``/publish`` and
    ``/rpc`` for the server's ``[proxy]`` (point ``proxy.connect`` etc. at them).

    .. code-block:: python

        router = ProxyRouter(secret=PROXY_SECRET, prefix="/tidings")

        @router.on_connect
        def connect(request: ConnectRequest):
            if request.user_id is None:                 # no token: a session cookie?
                user = session_user(request.cookie("session"))
                if user is None:
                    raise Refused("log in first")       # closed with 4003
                return user.id                          # admitted as this user

        @router.on_subscribe
        def subscribe(request: SubscribeRequest):
            if not may_read(request.user_id, request.channel):
                raise Refused("not your ticket")        # the client gets 4003

        @router.rpc("motivation_requested")
        async def motivation(request: RpcRequest):
            return {"message": f"Keep going, {request.user_id}!"}

        app.include_router(router)

    Handlers take the typed request and may be sync (run in the thread pool) or async.
    A connect handler returns ``None`` / ``True`` (admit as is), a ``str`` (admit as that
    user), ``False`` (deny: closed with 4003) or a :class:`~tidings.proxy.ProxyAnswer`
    (``admit(user_id, channels)``, ``deny(msg)``). A subscribe or publish handler returns ``None`` / ``True`` (allow), ``False`` (deny),
    an :class:`~tidings.models.Event` (publish this instead: publish only) or a
    :class:`~tidings.proxy.ProxyAnswer` (``allow()``, ``deny(msg)``, ``replace(type, data)``);
    an rpc handler returns the reply's data (any JSON, or a pydantic model) or a
    ``ProxyAnswer`` (``rpc_error(code, msg)``). Raising :class:`~tidings.proxy.Refused`
    refuses any of them. A ``ProxyAnswer`` with a field its call does not read
    (``user_id`` or ``channels`` but on connect, ``event`` but on publish, ``data`` but on
    rpc) is a mistake the server would silently ignore: it raises ``TypeError`` instead.
    Without a handler, connections are admitted as they are (a client without a token is
    then closed with 4001), subscriptions and publications allowed, and rpc methods answer
    ``not_found`` (the client gets 4004).

    A request whose signature does not verify is answered 401, one that is not this route's
    proxy call 400 (the client then gets 4500). An exception in a handler is a 500: the
    client gets 4500, and the call is not tried again. FastAPI's
    ``HTTPException(403, detail)`` refuses too, with ``detail`` as the message.
    ``secret=None, unsigned=True`` serves a server without ``proxy.secret``.
    """

    def __init__(
        self,
        secret: Optional[Secret],
        *,
        prefix: str = "",
        tolerance: Optional[float] = DEFAULT_TOLERANCE,
        unsigned: bool = False,
        **kwargs: Any,
    ) -> None:
        if secret is None and not unsigned:
            raise ValueError(
                "ProxyRouter needs the server's proxy.secret (or secret=None, unsigned=True "
                "for a server without one)"
            )
        super().__init__(prefix=prefix, **kwargs)
        self.secret = secret
        self.tolerance = tolerance
        self.unsigned = unsigned
        self._connect: Optional[Callable[..., Any]] = None
        self._subscribe: Optional[Callable[..., Any]] = None
        self._publish: Optional[Callable[..., Any]] = None
        self._rpc: Dict[str, Callable[..., Any]] = {}
        for kind in PROXY_KINDS:
            self.add_api_route(
                f"/{kind}",
                self._endpoint(kind),
                methods=["POST"],
                name=f"tidings_proxy_{kind}",
                response_class=JSONResponse,
            )

    # ------------------------------------------------------------ registration

    def on_connect(self, handler: Handler) -> Handler:
        """Decorates the handler admitting connections: who the user is (from a session
        cookie when there is no token), which channels it may use, or a refusal."""
        if self._connect is not None:
            raise ValueError("this ProxyRouter already has a connect handler")
        self._connect = handler
        return handler

    def on_subscribe(self, handler: Handler) -> Handler:
        """Decorates the handler deciding who may read a channel."""
        if self._subscribe is not None:
            raise ValueError("this ProxyRouter already has a subscribe handler")
        self._subscribe = handler
        return handler

    def on_publish(self, handler: Handler) -> Handler:
        """Decorates the handler checking (and perhaps rewriting) users' publications."""
        if self._publish is not None:
            raise ValueError("this ProxyRouter already has a publish handler")
        self._publish = handler
        return handler

    def rpc(self, method: Union[str, Handler, None] = None) -> Any:
        """Decorates the handler of an rpc method: ``@router.rpc("name")``, or bare
        ``@router.rpc`` for the function's own name."""
        if callable(method):
            return self._add_rpc(method.__name__, method)

        def decorator(handler: Handler) -> Handler:
            return self._add_rpc(handler.__name__ if method is None else method, handler)

        return decorator

    def _add_rpc(self, method: str, handler: Handler) -> Handler:
        if not isinstance(method, str) or not method:
            raise ValueError(f"an rpc method name is a non-empty string, not {method!r}")
        if method in self._rpc:
            raise ValueError(f"rpc method {method!r} already has a handler")
        self._rpc[method] = handler
        return handler

    @property
    def rpc_methods(self) -> List[str]:
        """The rpc methods answered, in registration order."""
        return list(self._rpc)

    # ------------------------------------------------------------ serving

    def _endpoint(self, kind: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            try:
                call = verify_and_parse(
                    self.secret,
                    request.headers,
                    body,
                    kind=kind,  # type: ignore[arg-type]
                    tolerance=self.tolerance,
                    unsigned=self.unsigned,
                )
            except WebhookSignatureError as error:
                return JSONResponse({"detail": f"invalid proxy signature: {error}"}, status_code=401)
            except ProxyRequestError as error:
                return JSONResponse({"detail": str(error)}, status_code=400)
            answer = await self.answer(call)
            return Response(answer.to_json(), media_type="application/json")

        endpoint.__name__ = f"tidings_proxy_{kind}"
        return endpoint

    async def answer(self, call: ProxyRequest) -> ProxyAnswer:
        """The answer to a verified call: its handler's, normalized."""
        if isinstance(call, RpcRequest):
            handler = self._rpc.get(call.method)
            if handler is None:
                return rpc_error("not_found", f"no rpc method {call.method!r}")
        else:
            handler = {
                "connect": self._connect,
                "subscribe": self._subscribe,
                "publish": self._publish,
            }[call.kind]
            if handler is None:
                return allow()
        try:
            result = await _call(handler, call)
        except Refused as refused:
            return refused.answer(call.kind)
        return _normalize(call.kind, result)


async def _call(handler: Callable[..., Any], call: ProxyRequest) -> Any:
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)
    ):
        return await handler(call)
    result = await run_in_threadpool(handler, call)
    if inspect.isawaitable(result):
        result = await result
    return result


# The answer fields each call reads besides `allow`, `message` and `error` (which all read);
# the server ignores the others, so a handler sending one (not null) has made a mistake.
_READS = {
    "connect": {"user_id", "channels"},
    "subscribe": set(),
    "publish": {"event"},
    "rpc": {"data"},
}
_ALL_READ = {"allow", "message", "error"}


def _normalize(kind: str, result: Any) -> ProxyAnswer:
    if isinstance(result, ProxyAnswer):
        ignored = {
            name for name in result.model_fields_set if getattr(result, name) is not None
        } - _ALL_READ - _READS[kind]
        if ignored:
            raise TypeError(
                f"the {kind} handler answered {', '.join(sorted(ignored))}, which {kind} "
                "calls do not read"
            )
        return result
    if kind == "rpc":
        return rpc_result(result)
    if result is None or result is True:
        return allow()
    if result is False:
        return deny()
    if kind == "publish" and isinstance(result, Event):
        return replace(result.type, result.data)
    if kind == "connect" and isinstance(result, str):
        return admit(user_id=result)
    expected = "None, a bool or a ProxyAnswer (allow(), deny(message)"
    if kind == "publish":
        expected += ", replace(event_type, data)) or an Event"
    elif kind == "connect":
        expected += ", admit(user_id, channels)) or a user id (str)"
    else:
        expected += ")"
    raise TypeError(f"the {kind} handler returns {expected}, not {type(result).__name__}")
