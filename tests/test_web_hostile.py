"""The web remote against what a second adversary tried (issue 23, items 1-5), over real sockets: origins
that are not the remote's own (`null` included), slow requests (slowloris), bodies over the limit, tokens
with URL characters, and loopback addresses other than 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import re
import socket

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from autoencoded.cli import main
from autoencoded.errors import UserError
from autoencoded.live.control.params import ParamStore
from autoencoded.live.stage import Stage
from autoencoded.live.web.app import MAX_BODY, Remote
from autoencoded.live.web.protocol import MAX_INCOMPLETE
from autoencoded.live.web.server import WebServer


@pytest.fixture(autouse=True)
def no_token_from_outside(monkeypatch):
    monkeypatch.delenv("AUTOENCODED_WEB_TOKEN", raising=False)


@pytest.fixture(scope="module")
def http():
    with httpx.Client(trust_env=False, timeout=30) as client:
        yield client


def _raw(port: int, data: bytes, host: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection((host, port), timeout=30)
    s.sendall(data)
    return s


def _until_closed(s: socket.socket) -> bytes | None:
    """What the server sends until it ends this connection (EOF or a reset); None if it is still open when the
    socket's timeout passes."""
    got = b""
    try:
        while data := s.recv(65536):
            got += data
        return got
    except ConnectionResetError:
        return got
    except TimeoutError:
        return None


def _closed(s: socket.socket) -> bool:
    return _until_closed(s) is not None


def test_every_origin_but_the_remotes_own_is_refused(http):
    """A sandboxed iframe on any site sends `Origin: null`, which was let through: its WebSocket played the
    show. Every origin that is not exactly the page's own is refused, on POST and on the WebSocket."""
    store = ParamStore()
    with WebServer(Remote(store), "127.0.0.1", 0) as server:
        port = server.port
        own = f"http://127.0.0.1:{port}"
        ws_url = f"ws://127.0.0.1:{port}/api/v1/ws"
        for origin in ("null", "", "http://evil.example", f"http://127.0.0.1:{port + 1}", f"https://127.0.0.1:{port}",
                       f"http://127.0.0.1:{port}.evil.example", f"{own}/", f"http://localhost:{port}"):
            r = http.post(f"{own}/api/v1/params", json={"noise": 0.777}, headers={"Origin": origin})
            assert r.status_code == 403 and "cross-origin" in r.json()["error"], (origin, r.text)
            with pytest.raises(InvalidStatus) as refused:
                connect(ws_url, origin=origin, open_timeout=10)
            assert refused.value.response.status_code == 403, origin
        assert store.peek().noise == 0 and store.peek().mix == 1
        # the remote's own page (and clients that are not browsers, which send no Origin) play it
        assert http.post(f"{own}/api/v1/params", json={"noise": 0.5}, headers={"Origin": own}).status_code == 200
        with connect(ws_url, origin=own, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "params"
            ws.send(json.dumps({"set": {"mix": 0.333}}))
            while store.peek().mix != pytest.approx(0.333):
                ws.recv(timeout=10)
        assert http.post(f"{own}/api/v1/params", json={"noise": 0.25}).status_code == 200
        assert store.peek().noise == 0.25


def test_slow_requests_leave_room_for_a_well_formed_one(http):
    """300 connections that send a request line and one header and stop: every later request got 503 (uvicorn
    counts them against limit_concurrency and has no header timeout). The oldest incomplete ones make room."""
    store = ParamStore()
    remote = Remote(store)
    with WebServer(remote, "127.0.0.1", 0, request_s=600) as server, contextlib.ExitStack() as held:
        slow = [held.enter_context(_raw(server.port, b"GET /api/v1/params HTTP/1.1\r\nHost: 127.0.0.1\r\n"))
                for _ in range(300)]
        r = http.get(f"http://127.0.0.1:{server.port}/api/v1/params")
        assert r.status_code == 200, r.text
        r = http.post(f"http://127.0.0.1:{server.port}/api/v1/params", json={"noise": 0.5})
        assert r.status_code == 200 and store.peek().noise == 0.5
        # the oldest were closed to make room; the newest still wait (their deadline is 600 s away)
        assert sum(_closed(s) for s in slow[:300 - MAX_INCOMPLETE - 2]) == 300 - MAX_INCOMPLETE - 2
        assert remote.counters["closed_for_room"] >= 300 - MAX_INCOMPLETE
        slow[-1].settimeout(0.5)
        assert not _closed(slow[-1])


def test_a_request_that_does_not_arrive_in_time_is_closed(http):
    """No header timeout at all: a connection holding half a request stayed open for ever. Now each request,
    headers and body, has request_s to arrive; what has arrived (a WebSocket, a stream) is never cut."""
    store = ParamStore()
    remote = Remote(store)
    with WebServer(remote, "127.0.0.1", 0, request_s=1.0) as server:
        port = server.port
        nothing = _raw(port, b"")
        half_headers = _raw(port, b"GET /api/v1/params HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        half_body = _raw(port, b"POST /api/v1/params HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                               b"\r\nContent-Length: 100\r\n\r\n{\"noise\":")
        second = _raw(port, b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert second.recv(65536).startswith(b"HTTP/1.1 200")  # keep-alive; then half of a second request
        second.sendall(b"GET /api/v1/status HTTP/1.1\r\n")
        with connect(f"ws://127.0.0.1:{port}/api/v1/ws", open_timeout=10) as ws:
            for s in (nothing, half_headers, half_body, second):
                assert _closed(s)
                s.close()
            assert remote.counters["closed_slow"] == 4
            # the WebSocket, opened before the others were closed, outlived the deadline and still plays
            ws.send(json.dumps({"set": {"mix": 0.25}}))
            while store.peek().mix != 0.25:
                ws.recv(timeout=10)
        assert store.peek().noise == 0  # the half body never applied
        assert http.get(f"http://127.0.0.1:{port}/api/v1/params").status_code == 200


def test_a_body_over_the_limit_is_refused_while_it_arrives():
    """A 1 GiB chunked POST was buffered whole (live RSS 541 -> 1575 MB) before the 413. Now the answer comes
    as soon as the body passes the limit, with the rest never read, and the connection ends."""
    store = ParamStore()
    with WebServer(Remote(store), "127.0.0.1", 0) as server:
        head = (b"POST /api/v1/params HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 8192
        s = _raw(server.port, head + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * (MAX_BODY // len(chunk) + 2))
        # ... and the body goes on (it never ends): the answer must not wait for its end
        answer = _until_closed(s)
        assert answer is not None and answer.startswith(b"HTTP/1.1 413"), answer
        assert b"connection: close" in answer.lower() and b"body over" in answer
        s.close()
        # a declared length over the limit: refused before any of it is read
        s = _raw(server.port, b"POST /api/v1/params HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                              b"\r\nContent-Length: 1073741824\r\n\r\n{")
        answer = _until_closed(s)
        assert answer is not None and answer.startswith(b"HTTP/1.1 413"), answer
        s.close()
        # a body at the limit is read and judged as JSON
        body = b'{"noise": 0.5' + b" " * (MAX_BODY - 14) + b"}"
        assert len(body) == MAX_BODY
        r = httpx.post(f"http://127.0.0.1:{server.port}/api/v1/params", content=body, trust_env=False, timeout=30,
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and store.peek().noise == 0.5


@pytest.mark.parametrize("token, why", [("a+b&c#d-long", "has '#' '&' '+'"), ("\u20acuro-token", "has '\u20ac'"),
                                        ("tok en\x1b[2J", r"has '\x1b' ' ' '['"), ("short", "is 5 characters")])
def test_a_token_that_would_not_survive_the_url_is_refused_at_start(token, why, monkeypatch, capsys):
    """'a+b&c#d' printed a URL that gave 401, and '\u20acuro' gave HTTP 500 (UnicodeEncodeError in Set-Cookie).
    A token travels as it is in the URL, the cookie and the X-Token header, so it is restricted to what all
    three carry, and anything else is one line at start, exit 2, before a camera or a model opens."""
    monkeypatch.setenv("AUTOENCODED_WEB_TOKEN", token)
    with pytest.raises(UserError, match=rf"^\$AUTOENCODED_WEB_TOKEN {re.escape(why)}.*: a token is 8 to 256 letters"):
        Stage(ParamStore(), web="0.0.0.0:0")
    assert main(["live", "--input", "demo", "--output", "null", "--duration", "1", "--osc-port", "0",
                 "--web", "0.0.0.0:0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: $AUTOENCODED_WEB_TOKEN") and "\n" not in err and "\x1b" not in err
    assert token not in err  # a secret: never printed


def test_a_token_of_every_allowed_character_works_from_the_printed_url(http, monkeypatch):
    token = "Az09-_.~Token"
    monkeypatch.setenv("AUTOENCODED_WEB_TOKEN", token)
    store = ParamStore()
    with WebServer(Remote(store), "0.0.0.0", 0) as server:
        printed = server.url
        assert printed.endswith(f"/?token={token}")
        local = f"http://127.0.0.1:{server.port}/?token={token}"
        page = http.get(local)
        assert page.status_code == 200 and f"autoencoded_token={token};" in page.headers["set-cookie"]
        assert http.post(f"http://127.0.0.1:{server.port}/api/v1/params", json={"noise": 1},
                         headers={"X-Token": token}).status_code == 200
        assert http.get(f"http://127.0.0.1:{server.port}/api/v1/params",
                        headers={"Cookie": f"autoencoded_token={token}"}).status_code == 200


def test_another_loopback_address_answers_at_its_printed_url(http):
    """`--web 127.0.0.2:PORT` printed a URL that answered 403 to every request ("127.0.0.1 or localhost
    only"): the address listened on is this machine's too."""
    store = ParamStore()
    with WebServer(Remote(store), "127.0.0.2", 0) as server:
        assert server.loopback and server.token is None
        assert server.url == f"http://127.0.0.2:{server.port}/"
        page = http.get(server.url)
        assert page.status_code == 200 and "autoencoded" in page.text
        own = f"http://127.0.0.2:{server.port}"
        assert http.post(f"{own}/api/v1/params", json={"noise": 0.5}, headers={"Origin": own}).status_code == 200
        with connect(f"ws://127.0.0.2:{server.port}/api/v1/ws", origin=own, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "params"
        # DNS rebinding is still refused: another name for this address is not this remote
        assert http.get(f"{own}/api/v1/params", headers={"Host": f"evil.example:{server.port}"}).status_code == 403
    assert store.peek().noise == 0.5
