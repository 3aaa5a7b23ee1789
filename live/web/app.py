"""The web remote's ASGI app (Starlette): the page, the REST API, the WebSocket and the MJPEG preview.

    GET  /                       the remote (static files from the package: no CDN, venues are offline)
    GET  /api/v1/params          every control: type (float, int, toggle, trigger), value, min, max,
                                 default, help
    POST /api/v1/params          {"noise": 0.5, "cue/recall/3": true, ...}: validated and clamped as OSC
                                 is, applied in one step, all or nothing
    GET  /api/v1/status          the live loop's stats (the dict --stats-json writes and OSC /status sends),
                                 the preset, the signals, the remote's counters
    GET  /api/v1/presets         {"presets": [...], "current": name}; POST {"name": ...} switches
    POST /api/v1/model           {"model": spec}: load in the background, swap between two frames
    POST /api/v1/midi-learn      {"target": "noise/drift"}: bind the next moved MIDI control to it and save
                                 it to the preset
    GET  /preview.mjpg           the output, latest frame only (multipart JPEG, at most MAX_FPS frames a
                                 second, MAX_WIDTH pixels wide: live/web/preview.py)
    WS   /api/v1/ws              pushes {"type": "params", ...} on every change of the controls (from OSC,
                                 MIDI, this or another browser), "status" every STATUS_S s and "signals"
                                 every SIGNALS_S s; takes {"set": {...}} like POST /api/v1/params

Every request and WebSocket passes Guard first: with a token (required off loopback) it must come as
?token= (which also sets a SameSite=Strict cookie for what the page loads next), an `Authorization: Bearer`
header, `X-Token` or that cookie; on loopback without a token the Host header must name this machine or
the address it listens on (DNS rebinding). Any Origin but the remote's own is refused, `null` included (a
sandboxed iframe on any site sends `null`): another site's page in the same browser must not play the
show. A browser sends Origin with every WebSocket and every POST, so nothing that changes the show
passes without it; clients that are not browsers send none. A JSON body is read chunk by chunk and refused
(413, and the connection closed) as soon as it passes MAX_BODY. Errors are one line: {"error": "..."} with
a 4xx status.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
from collections.abc import Callable
from importlib import resources
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from autoencoded.documents import DocumentError, parse_strict_json
from autoencoded.errors import UserError
from autoencoded.live.control.params import ControlRefused, ParamStore

STATIC = resources.files("autoencoded.live.web") / "static"
PUSH_S = 0.02  # how often a WebSocket looks for changed controls
STATUS_S = 1.0
SIGNALS_S = 0.1
PREVIEW_POLL_S = 0.01
MAX_BODY = 64 * 1024
MAX_DEPTH = 8  # of a request's JSON: the API's deepest is two ({"set": {"noise": 0.5}})
MAX_WS_CLIENTS = 32
PART = b"--frame\r\nContent-Type: image/jpeg\r\n\r\n"  # a multipart part's boundary and headers
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
COOKIE = "autoencoded_token"


class RequestRefused(Exception):
    """A request the remote answers with an error: the HTTP status and the one-line message ({"error": ...})."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _shown(text: object, limit: int = 64) -> str:
    """Text from the network as it may appear in a message: repr (escapes control characters), cut short."""
    return repr(str(text)[:limit])


def jsonable(obj: object) -> object:
    """Stats as strict JSON: NaN/Inf become null, unknown objects their str()."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalars
        return jsonable(obj.item())
    return str(obj)


class Remote:
    """What the web remote plays and shows. Everything but the store is optional:
    surface (presets, MIDI learn: a ControlSurface), on_model(spec), status() -> dict, preview (Preview),
    signals() -> {signal: 0..1} (the modulation's inputs)."""

    def __init__(self, store: ParamStore, *, surface=None, on_model: Callable[[str], object] | None = None,
                 status: Callable[[], dict] | None = None, preview=None,
                 signals: Callable[[], dict] | None = None, log: Callable[[str], object] | None = None) -> None:
        self.store, self.surface, self.on_model, self.status_fn = store, surface, on_model, status
        self.preview, self.signals, self.log = preview, signals, log or (lambda line: None)
        self.counters = {"requests": 0, "applied": 0, "refused": 0, "ws_clients": 0, "preview_clients": 0}
        self.stopping = False

    # -- actions shared by REST and WebSocket ------------------------------------------------------
    def apply(self, body: object) -> dict[str, object]:
        """Every entry validated first (nothing changes on any error), then applied in one step: the
        store's own `apply`, which clamps as OSC does. Returns the current values of the controls it set."""
        if not isinstance(body, dict) or not body:
            raise RequestRefused(400, 'expected a JSON object {"control": value, ...}')
        try:
            self.store.apply(body)
        except ControlRefused as exc:
            raise RequestRefused(422, str(exc)) from None  # names known controls; an unknown one as repr()
        self.counters["applied"] += 1
        values = self.store.peek().values()
        return {name: values[name] for name in body if name in values}

    def status(self) -> dict:
        out: dict[str, object] = {}
        try:
            if self.status_fn is not None:
                out.update(self.status_fn() or {})
            if self.signals is not None:
                out["signals"] = dict(self.signals() or {})
        except Exception as exc:  # a stats bug must not break the remote: say so in the answer
            self.counters["status_errors"] = self.counters.get("status_errors", 0) + 1
            out["status_error"] = f"{type(exc).__name__}: {exc}"
        out["web"] = dict(self.counters)
        return jsonable(out)

    # -- HTTP --------------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-store"})

    async def get_params(self, request: Request) -> Response:
        return JSONResponse({"controls": self.store.describe(), "version": self.store.peek().version})

    async def post_params(self, request: Request) -> Response:
        return await self._json_action(request, lambda body: {"values": self.apply(body)})

    async def get_status(self, request: Request) -> Response:
        return JSONResponse(self.status())

    async def get_presets(self, request: Request) -> Response:
        from autoencoded.live.control.presets import list_presets

        current = self.surface.preset.name if self.surface is not None and self.surface.preset else None
        return JSONResponse({"presets": list_presets(), "current": current})

    async def post_preset(self, request: Request) -> Response:
        def switch(body: object) -> dict:
            name = _field(body, "name")
            if self.surface is None:
                raise RequestRefused(409, "presets are not available here")
            self.surface.switch_preset(name, allow_path=False)  # names only from the network; it says so itself
            return {"preset": name}

        return await self._json_action(request, switch)

    async def post_model(self, request: Request) -> Response:
        def load(body: object) -> dict:
            spec = _field(body, "model")
            if not spec.isprintable():  # it is printed in the log: no terminal control sequences from the network
                raise RequestRefused(422, "a model is a name or a path of printable characters")
            if self.on_model is None:
                raise RequestRefused(409, "models cannot be swapped here")
            self.on_model(spec)
            return {"loading": spec}

        return await self._json_action(request, load, status=202)

    async def post_learn(self, request: Request) -> Response:
        def learn(body: object) -> dict:
            target = _field(body, "target")
            if self.surface is None:
                raise RequestRefused(409, "MIDI learn is not available here")
            try:
                return {"learning": self.surface.start_learn(target)}
            except ValueError:
                raise RequestRefused(422, f"unknown control {_shown(target)}") from None

        return await self._json_action(request, learn)

    async def _json_action(self, request: Request, action: Callable[[object], dict], status: int = 200) -> Response:
        self.counters["requests"] += 1
        try:
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                raise RequestRefused(415, "send JSON (Content-Type: application/json)")
            body = _parse(await _body(request))
            return JSONResponse(jsonable(action(body)), status_code=status)
        except RequestRefused as exc:
            self.counters["refused"] += 1
            # the rest of a body too big is not read: the connection ends with the answer
            close = {"Connection": "close"} if exc.status == 413 else None
            return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=close)
        except ClientDisconnect:  # gone while sending its body (or closed for being too slow): nobody to answer
            self.counters["refused"] += 1
            return Response(status_code=400)
        except UserError as exc:  # a preset that does not exist or does not parse
            self.counters["refused"] += 1
            return JSONResponse({"error": str(exc)}, status_code=422)

    async def preview_mjpg(self, request: Request) -> Response:
        if self.preview is None:
            return JSONResponse({"error": "no preview in this show"}, status_code=404)
        preview = self.preview

        async def frames():
            seq, first = 0, True
            self.counters["preview_clients"] += 1
            try:
                while not self.stopping:
                    got = None
                    if preview.latest > seq:
                        got = await asyncio.to_thread(preview.jpeg, seq)  # encoding stays off the event loop
                    if got is None:
                        await asyncio.sleep(PREVIEW_POLL_S)
                        continue
                    seq, data = got
                    # each frame is followed at once by the next part's boundary and headers: chromium shows a part
                    # only when it has read the next one's headers, and a frame must not wait for the next frame
                    yield (PART if first else b"") + data + b"\r\n" + PART
                    first = False
            finally:
                self.counters["preview_clients"] -= 1

        return StreamingResponse(frames(), media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers={"Cache-Control": "no-store"})

    # -- WebSocket ---------------------------------------------------------------------------------
    async def websocket(self, ws: WebSocket) -> None:
        if self.counters["ws_clients"] >= MAX_WS_CLIENTS:  # each costs a look at the store every 20 ms
            await ws.close(code=1013, reason="too many remotes open")
            return
        await ws.accept()
        self.counters["ws_clients"] += 1
        tasks = [asyncio.ensure_future(self._ws_receive(ws)), asyncio.ensure_future(self._ws_push(ws))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            self.counters["ws_clients"] -= 1

    async def _ws_receive(self, ws: WebSocket) -> None:
        while not self.stopping:
            try:
                message = await ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            self.counters["requests"] += 1
            try:
                # JSON in a binary frame is read as in a text one (it used to end the connection)
                text = message.get("text")
                msg = _parse((message.get("bytes") or b"") if text is None else text)
                if not isinstance(msg, dict) or "set" not in msg:
                    raise RequestRefused(400, 'expected {"set": {"control": value, ...}}')
                self.apply(msg["set"])
            except RequestRefused as exc:
                self.counters["refused"] += 1
                await ws.send_text(json.dumps({"type": "error", "error": str(exc)}))

    async def _ws_push(self, ws: WebSocket) -> None:
        loop = asyncio.get_running_loop()
        sent: dict[str, object] = {}
        version = -1
        next_status = next_signals = 0.0
        while not self.stopping:
            p = self.store.peek()
            if p.version != version:
                version = p.version
                diff = {k: v for k, v in p.values().items() if k not in sent or sent[k] != v}
                if diff:
                    sent.update(diff)
                    await ws.send_text(json.dumps({"type": "params", "values": diff, "version": version}))
            now = loop.time()
            if now >= next_status:
                next_status = now + STATUS_S
                await ws.send_text(json.dumps({"type": "status", "status": self.status()}))
            if self.signals is not None and now >= next_signals:
                next_signals = now + SIGNALS_S
                values = self.signals() or {}
                if values:
                    await ws.send_text(json.dumps({"type": "signals", "values": jsonable(values)}))
            await asyncio.sleep(PUSH_S)


async def _body(request: Request) -> bytes:
    """The request's body, refused (413) as soon as it passes MAX_BODY: a declared length is checked before
    anything is read, and a chunked body is counted as it arrives, never buffered whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise RequestRefused(413, f"body over {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise RequestRefused(413, f"body over {MAX_BODY} bytes")
    return bytes(body)


def _parse(text: str | bytes) -> object:
    """A request's JSON, refused (400) unless every number fits a double and it nests at most MAX_DEPTH deep:
    a 4000-digit integer reached the store's float() as an OverflowError (a 500, or a WebSocket dropped)."""
    try:
        return parse_strict_json(text, MAX_DEPTH)
    except DocumentError as exc:
        raise RequestRefused(400, f"bad JSON: {exc}") from None


def _field(body: object, key: str) -> str:
    value = body.get(key) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value.strip() or len(value) > 1024:
        raise RequestRefused(422, f'expected {{"{key}": "..."}}')
    return value.strip()


class Guard:
    """ASGI middleware in front of everything, HTTP and WebSocket alike (see the module's docstring)."""

    def __init__(self, app, token: str | None = None, loopback: bool = True, host: str = "127.0.0.1") -> None:
        self.app, self.token, self.loopback = app, token, loopback
        # what a browser on this machine puts in Host: the loopback names and the address listened on
        # (--web 127.0.0.2:PORT prints http://127.0.0.2:PORT/)
        self.names = {*LOOPBACK_NAMES, _host_name(host)}
        self.refused = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            why = self.check(scope)
            if why is not None:
                self.refused += 1
                status, message = why
                if scope["type"] == "http":
                    await JSONResponse({"error": message}, status_code=status)(scope, receive, send)
                else:  # closing before accepting: the handshake gets 403
                    await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
                return
            if self.token is not None and scope["type"] == "http" and _query_token(scope):
                send = self._with_cookie(send)
        await self.app(scope, receive, send)

    def _with_cookie(self, send):
        """The page was opened with ?token=: a cookie carries it to what the page loads next (its script, the
        preview <img>, the WebSocket). HttpOnly, and SameSite=Strict: no other site's page sends it."""
        cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode("latin-1")

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), (b"set-cookie", cookie)])
            await send(message)

        return sending

    def check(self, scope) -> tuple[int, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.token is not None:
            auth = headers.get("authorization", "")
            given = [_query_token(scope), auth[7:].strip() if auth.lower().startswith("bearer ") else "",
                     headers.get("x-token", ""), _cookie(headers.get("cookie", ""), COOKIE)]
            if not any(g and hmac.compare_digest(g.encode(), self.token.encode()) for g in given):
                return 401, "a token is required: open the URL that `autoencoded live` printed"
        elif self.loopback and _host_name(host) not in self.names:
            return 403, f"this remote answers to {' or '.join(sorted(self.names - {'::1'}))} only"
        origin = headers.get("origin")
        if origin is not None and origin.lower() != _own_origin(scope, host):
            return 403, "cross-origin request refused (only the remote's own page may play the show)"
        return None


def _own_origin(scope, host: str) -> str:
    """The Origin a page served by this request's Host sends: scheme://host[:port] (ws is http's)."""
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    return f"{scheme}://{host.strip().lower()}"


def _query_token(scope) -> str:
    return parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[-1]


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def build_app(remote: Remote, token: str | None = None, loopback: bool = True, host: str = "127.0.0.1") -> Starlette:
    routes = [
        Route("/", remote.index),
        Route("/api/v1/params", remote.get_params, methods=["GET"]),
        Route("/api/v1/params", remote.post_params, methods=["POST"]),
        Route("/api/v1/status", remote.get_status, methods=["GET"]),
        Route("/api/v1/presets", remote.get_presets, methods=["GET"]),
        Route("/api/v1/presets", remote.post_preset, methods=["POST"]),
        Route("/api/v1/model", remote.post_model, methods=["POST"]),
        Route("/api/v1/midi-learn", remote.post_learn, methods=["POST"]),
        Route("/preview.mjpg", remote.preview_mjpg, methods=["GET"]),
        WebSocketRoute("/api/v1/ws", remote.websocket),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": f"no such page: {_shown(request.url.path, 120)}"}, status_code=404)

    async def bad_method(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": f"{request.method} is not allowed here"}, status_code=405)

    app = Starlette(routes=routes, middleware=[Middleware(Guard, token=token, loopback=loopback, host=host)],
                    exception_handlers={404: not_found, 405: bad_method})
    return app

