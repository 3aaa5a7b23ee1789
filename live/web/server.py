"""The web remote's server: uvicorn on a thread, serving live/web/app.py.

    server = WebServer(remote, "127.0.0.1", 8080, log=print).start()   # one line gives the URL
    ...
    server.stop()

Binds 127.0.0.1 by default. Any other address (the LAN: --web 0.0.0.0:8080) gets a token, random at each
start unless $AUTOENCODED_WEB_TOKEN sets one, printed in the URL and required on every request and
WebSocket. A token is 8 to 256 of the characters a URL, a cookie and an HTTP header all carry as they are
(letters, digits, '-', '_', '.', '~'): it travels in all three (?token=, the page's cookie, X-Token), and
any other character would need a different encoding in each, so anything else is refused at start in one
line rather than printed in a URL that answers 401 (or 500).

Each request must arrive whole within protocol.REQUEST_S, and slow ones cannot take every connection (see
protocol.py). The socket is bound here, before the thread starts, so a busy port is a UserError (or one
line, for the default port) rather than a log message from another thread. uvicorn's own log lines (a
client that misbehaves, a handler that raised) reach the show's log as one line each, escaped, never a
traceback.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable

from autoencoded.errors import UserError
from autoencoded.live.web.app import MAX_BODY, Remote, build_app
from autoencoded.live.web.protocol import REQUEST_S, deadline_protocol
from autoencoded.net import is_loopback
from autoencoded.service import Service
from autoencoded.text import printable

DEFAULT = "127.0.0.1:8080"
TOKEN_ENV = "AUTOENCODED_WEB_TOKEN"
TOKEN_CHARS = "letters, digits, '-', '_', '.' or '~'"
_TOKEN_CHAR = re.compile(r"[A-Za-z0-9._~-]")  # RFC 3986's unreserved: as is in a URL, a cookie and a header


def web_token(given: str | None = None) -> str | None:
    """`given`, else $AUTOENCODED_WEB_TOKEN, else None; UserError for one that would not survive the trip
    through the URL, the cookie and the X-Token header as it is (see the module's docstring)."""
    token, what = (given, "the web token") if given else (os.environ.get(TOKEN_ENV), f"${TOKEN_ENV}")
    if not token:
        return None
    odd = sorted({c for c in token if not _TOKEN_CHAR.fullmatch(c)})
    if odd or not 8 <= len(token) <= 256:
        why = "has " + " ".join(f"'{printable(c)}'" for c in odd[:8]) if odd else f"is {len(token)} characters long"
        raise UserError(f"{what} {why}: a token is 8 to 256 {TOKEN_CHARS} (it goes in a URL, a cookie and a "
                        "header as it is)")
    return token


def parse_web(text: str) -> tuple[str, int] | None:
    """--web [HOST:]PORT -> (host, port); '0' (or 'off') -> None. Port 0 in HOST:0 picks a free port."""
    text = str(text).strip()
    if text in ("0", "off", "none"):
        return None
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536 or (not sep and int(port) == 0):
        raise UserError(f"--web expects [HOST:]PORT (e.g. 8080 or 0.0.0.0:8080), or 0 to turn it off; got {text!r}")
    return host, int(port)


def lan_address() -> str:
    """This machine's address on the LAN, as a phone would type it (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET: picks the outgoing interface, sends nothing
            return s.getsockname()[0]
    except OSError:
        return socket.gethostname()


class _OneLine(logging.Handler):
    """uvicorn's log records as one line each (at most one a second per kind), never a traceback."""

    def __init__(self, log: Callable[[str], object]) -> None:
        super().__init__(logging.WARNING)
        self.log = log
        self._last: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage().strip().splitlines()[0][:200] if record.getMessage().strip() else record.name
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text = f"{text} ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ''})"
            now = time.monotonic()
            if now - self._last.get(text[:40], -10.0) >= 1.0:
                self._last[text[:40]] = now
                self.log("web: " + printable(text))  # a client's bytes may be in it
        except Exception:  # logging must never raise into the server
            pass


class WebServer(Service):
    def __init__(self, remote: Remote, host: str = "127.0.0.1", port: int = 8080, *,
                 token: str | None = None, log: Callable[[str], object] | None = None,
                 request_s: float = REQUEST_S) -> None:
        self.remote, self.host, self.port = remote, host, port
        self.loopback = is_loopback(host)
        self.token = web_token(token) or (None if self.loopback else secrets.token_urlsafe(12))
        self.request_s = request_s
        self.log = log or (lambda line: None)
        self._server = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        shown = self.host if self.loopback else (lan_address() if self.host in ("0.0.0.0", "::") else self.host)
        shown = f"[{shown}]" if ":" in shown else shown
        return f"http://{shown}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only then, and without it
        # a keep-alive response (headers, then body) waits 40 ms for the client's delayed ACK (Nagle)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            why = "is in use (another autoencoded live? pick one with --web PORT, or --web 0)" if \
                exc.errno in (98, 48, 10048) else f"cannot be opened: {exc.strerror or exc}"
            raise UserError(f"web {self.host}:{self.port} {why}") from None
        sock.listen(128)
        return sock

    def start(self) -> WebServer:
        import uvicorn

        self._sock = self._bind()
        self.port = self._sock.getsockname()[1]
        handler = _OneLine(self.log)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
            logger = logging.getLogger(name)
            logger.handlers = [handler]
            logger.propagate = False
        app = build_app(self.remote, token=self.token, loopback=self.loopback, host=self.host)
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", loop="asyncio",
                                http=deadline_protocol(self.request_s, counters=self.remote.counters),
                                timeout_graceful_shutdown=1, ws_ping_interval=10, ws_ping_timeout=10,
                                ws_max_size=MAX_BODY, limit_concurrency=256)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="web-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            self.stop()
            raise UserError(f"web {self.host}:{self.port}: the server did not start")
        return self

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # noqa: BLE001 - the show goes on without its remote
            self.log(f"web: the remote stopped ({type(exc).__name__}: {exc})")

    def stop(self) -> None:
        self.remote.stopping = True
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout=2)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
