"""The web remote over real HTTP and WebSockets on loopback: the API, validation, pushes from every
controller, the MJPEG preview, the token off loopback, Host and Origin checks, and the static page."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time

import cv2
import httpx
import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from autoencoded.errors import UserError
from autoencoded.live.control.osc import OscServer
from autoencoded.live.control.params import N_CUES, SPECS, ParamStore
from autoencoded.live.control.surface import ControlSurface
from autoencoded.live.web.app import STATIC, Remote
from autoencoded.live.web.preview import Preview
from autoencoded.live.web.server import WebServer, parse_web

from helpers import msg, sender, settle


@pytest.fixture(autouse=True)
def isolated_user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("AUTOENCODED_PRESETS", raising=False)
    monkeypatch.delenv("AUTOENCODED_WEB_TOKEN", raising=False)


@pytest.fixture
def show():
    """A store, a remote with stats and a preview, served on a free loopback port."""
    store = ParamStore()
    preview = Preview(max_fps=1000)
    lines = []
    remote = Remote(store, status=lambda: {"fps_out": 29.5, "model": "demo", "weird": float("nan")}, preview=preview,
                    signals=lambda: {"audio.bass": 0.25}, log=lines.append)
    with WebServer(remote, "127.0.0.1", 0, log=lines.append) as server:
        yield store, remote, server, preview, lines


@pytest.fixture(scope="module")
def http():
    """One client for the module (a new httpx client builds an SSL context: about a second on a busy machine)."""
    with httpx.Client(trust_env=False, timeout=30) as client:
        yield client


def url(server, path=""):
    return f"http://127.0.0.1:{server.port}{path}"


def test_parse_web():
    assert parse_web("8080") == ("127.0.0.1", 8080)
    assert parse_web("0") is None and parse_web("off") is None
    assert parse_web("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_web("[::1]:9") == ("::1", 9)
    assert parse_web("127.0.0.1:0") == ("127.0.0.1", 0)  # a free port (tests)
    for bad in ("http", "1:2:x", "99999", "host:"):
        with pytest.raises(UserError, match=r"--web expects \[HOST:\]PORT"):
            parse_web(bad)


def test_get_params_lists_every_control(http, show):
    store, _, server, _, _ = show
    store.set("noise", 0.25)
    r = http.get(url(server, "/api/v1/params"))
    assert r.status_code == 200
    controls = r.json()["controls"]
    assert set(SPECS) <= set(controls)
    assert controls["noise"] == {"type": "float", "value": 0.25, "min": 0.0, "max": 1.0, "default": 0.0,
                                 "help": SPECS["noise"].help}
    assert controls["freeze"]["type"] == "toggle" and controls["noise/seed"]["type"] == "int"
    assert all(controls[f"cue/{a}/{n}"]["type"] == "trigger" for a in ("store", "recall") for n in range(N_CUES))
    assert controls["noise/reseed"]["type"] == "trigger"


def test_post_params_applies_atomically_with_osc_validation(http, show):
    store, _, server, _, _ = show
    r = http.post(url(server, "/api/v1/params"), json={"noise": 0.5, "mix": 7, "freeze": True, "noise/drift": -1})
    assert r.status_code == 200, r.text
    assert r.json()["values"] == {"noise": 0.5, "mix": 1.0, "freeze": 1, "noise/drift": 0.0}  # clamped like OSC
    p = store.peek()
    assert (p.noise, p.mix, p.freeze, p.noise_drift) == (0.5, 1.0, True, 0.0)
    version = p.version
    r = http.post(url(server, "/api/v1/params"), json={"noise/reseed": True, "cue/recall/3": 1, "cue/store/2": False})
    assert r.status_code == 200 and store.peek().noise_seed == 1 and store.peek().cue_recall == 3
    assert store.snapshot().cue_store == ()  # a button's release does nothing
    version = store.peek().version
    # anything wrong: 4xx with one line, and nothing of the batch is applied
    for body, status, why in [(b"{not json", 400, "bad JSON"), (b"[1, 2]", 400, "expected a JSON object"),
                              (b"{}", 400, "expected a JSON object"),
                              (b'{"noise": 0.9, "nosie": 1}', 422, "unknown control 'nosie'"),
                              (b'{"noise": 0.9, "mix": "loud"}', 422, "mix expects a number, got a string"),
                              (b'{"noise": NaN}', 400, "NaN is not a JSON number"), (b'{"noise": null}', 422, "got null"),
                              (b'{"cue/recall/3": "yes"}', 422, "is a button"),
                              (b'{"cue/store/99": true}', 422, "unknown control")]:
        r = http.post(url(server, "/api/v1/params"), content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == status, (body, r.text)
        assert why in r.json()["error"] and "\n" not in r.json()["error"], r.text
    r = http.post(url(server, "/api/v1/params"), content=b"noise=1", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415  # a cross-site form cannot send JSON without asking first
    r = http.post(url(server, "/api/v1/params"), content=b"{" + b" " * 70000 + b"}",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert store.peek().version == version and store.peek().noise == 0.5
    assert http.get(url(server, "/nope")).status_code == 404
    assert http.delete(url(server, "/api/v1/params")).status_code == 405


def test_status_is_the_stats_dict(http, show):
    _, remote, server, _, _ = show
    s = http.get(url(server, "/api/v1/status")).json()
    assert s["fps_out"] == 29.5 and s["model"] == "demo" and s["weird"] is None  # strict JSON
    assert s["signals"] == {"audio.bass": 0.25} and s["web"]["requests"] >= 0


def test_websocket_pushes_every_change_from_every_controller(show):
    store, _, server, _, _ = show
    ws_url = f"ws://127.0.0.1:{server.port}/api/v1/ws"
    osc = OscServer(store, "127.0.0.1", 0).start()
    try:
        with connect(ws_url) as a, connect(ws_url) as b:
            def until(ws, pred, what):
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    m = json.loads(ws.recv(timeout=10))
                    if pred(m):
                        return m
                raise AssertionError(f"no push for {what}")

            first = until(a, lambda m: m["type"] == "params", "the first values")
            assert set(first["values"]) == set(SPECS)  # everything at connect
            until(a, lambda m: m["type"] == "status" and m["status"]["model"] == "demo", "stats")
            until(a, lambda m: m["type"] == "signals" and m["values"] == {"audio.bass": 0.25}, "signals")
            # from a browser (a) to the other (b)
            a.send(json.dumps({"set": {"noise": 0.75}}))
            until(b, lambda m: m["type"] == "params" and m["values"].get("noise") == 0.75, "a's move")
            # from OSC, over real UDP
            s = sender()
            start = osc.counters["received"]
            s.sendto(msg("/mix", 0.25), ("127.0.0.1", osc.port))
            s.close()
            settle(osc, start + 1)
            for ws in (a, b):
                until(ws, lambda m: m["type"] == "params" and m["values"].get("mix") == 0.25, "OSC's move")
            # from MIDI or anything else that writes the store
            store.press("cue/recall/5")
            until(b, lambda m: m["type"] == "params" and m["values"].get("cue/recall") == 5, "a cue recall")
            a.send("{broken")
            assert "bad JSON" in until(a, lambda m: m["type"] == "error", "an error")["error"]
            a.send(json.dumps({"set": {"noise": "x"}}))
            assert "expects a number" in until(a, lambda m: m["type"] == "error", "an error")["error"]
    finally:
        osc.stop()


def _mjpeg_frames(http, server, n, token=""):
    """The first n JPEG frames of /preview.mjpg, decoded. Each frame's part ends where the next part begins."""
    part = b"--frame\r\nContent-Type: image/jpeg\r\n\r\n"
    frames = []
    with http.stream("GET", url(server, "/preview.mjpg" + token), timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("multipart/x-mixed-replace; boundary=frame")
        buf = b""
        for chunk in r.iter_bytes():
            buf += chunk
            assert buf.startswith(part[:len(buf)])
            while True:
                end = buf.find(b"\r\n" + part, len(part))
                if end < 0:
                    break
                data, buf = buf[len(part):end], buf[end + 2:]
                frames.append(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
            if len(frames) >= n:
                return frames
    return frames


def test_preview_streams_the_latest_frame(http, show):
    _, _, server, preview, _ = show
    red = np.zeros((720, 1280, 3), np.uint8)
    red[..., 0] = 255
    preview.write(red)
    frames = _mjpeg_frames(http, server, 1)  # the only frame so far arrives whole: no waiting for a second
    assert frames[0].shape == (360, 640, 3)  # downscaled for phones
    assert frames[0][..., 2].mean() > 240 and frames[0][..., 0].mean() < 15  # red (decoded as BGR)
    # a client gets the latest frame; what it missed is skipped, never queued
    for i in range(50):
        preview.write(np.full((72, 128, 3), i, np.uint8))
    seen = preview.jpeg(0)[0]  # what the stream above was sent
    time.sleep(preview.min_interval)  # the rate cap: on a quick machine the stream's encode was just now
    assert preview.jpeg(seen)[0] == preview.latest == seen + 50  # the next client read skips to the latest
    assert preview.jpeg(0)[0] == preview.latest and preview.jpeg(preview.latest) is None  # encoded once
    assert preview.encoded == 2


def test_lan_bind_requires_the_token_everywhere(http, monkeypatch):
    store = ParamStore()
    lines = []
    with WebServer(Remote(store, preview=Preview()), "0.0.0.0", 0, log=lines.append) as server:
        token = server.token
        assert token and len(token) >= 16 and f"?token={token}" in server.url
        assert not server.url.startswith("http://0.0.0.0")  # an address a phone can open
        for path in ("/", "/api/v1/params", "/api/v1/status", "/preview.mjpg", "/static/app.js"):
            r = http.get(url(server, path))
            assert r.status_code == 401 and "token" in r.json()["error"], path
            assert http.get(url(server, path + "?token=wrong")).status_code == 401
        r = http.post(url(server, "/api/v1/params"), json={"noise": 1})
        assert r.status_code == 401 and store.peek().noise == 0
        assert http.get(url(server, f"/api/v1/params?token={token}")).status_code == 200
        assert http.get(url(server, "/api/v1/status"), headers={"Authorization": f"Bearer {token}"}).status_code == 200
        r = http.post(url(server, "/api/v1/params"), json={"noise": 1}, headers={"X-Token": token})
        assert r.status_code == 200 and store.peek().noise == 1
        # the page opened with ?token= gets a cookie for what it loads next
        r = http.get(url(server, f"/?token={token}"))
        assert r.status_code == 200 and "SameSite=Strict" in r.headers["set-cookie"] and "HttpOnly" in r.headers[
            "set-cookie"]
        cookie = {"Cookie": f"autoencoded_token={token}"}
        assert http.get(url(server, "/static/app.js"), headers=cookie).status_code == 200
        assert http.get(url(server, "/static/app.js"), headers={"Cookie": "autoencoded_token=x"}).status_code == 401
        ws_url = f"ws://127.0.0.1:{server.port}/api/v1/ws"
        with connect(ws_url, additional_headers=cookie) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "params"
        http.cookies.clear()
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url, open_timeout=10)
        assert refused.value.response.status_code == 403
        with connect(f"{ws_url}?token={token}") as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "params"
    monkeypatch.setenv("AUTOENCODED_WEB_TOKEN", "my-own-token")
    with WebServer(Remote(store), "0.0.0.0", 0) as server:
        assert server.token == "my-own-token"
        assert http.get(url(server, "/api/v1/params?token=my-own-token")).status_code == 200


def test_loopback_refuses_other_hosts_and_other_sites(http, show):
    store, _, server, _, _ = show
    assert http.get(url(server, "/api/v1/params"), headers={"Host": "evil.example:80"}).status_code == 403
    assert http.get(url(server, "/api/v1/params"), headers={"Host": f"localhost:{server.port}"}).status_code == 200
    r = http.post(url(server, "/api/v1/params"), json={"noise": 1}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and store.peek().noise == 0
    r = http.post(url(server, "/api/v1/params"), json={"noise": 1},
                   headers={"Origin": f"http://127.0.0.1:{server.port}"})
    assert r.status_code == 200
    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{server.port}/api/v1/ws", origin="http://evil.example", open_timeout=10)


def test_busy_port_is_a_user_error(show):
    _, remote, server, _, _ = show
    with pytest.raises(UserError, match=r"web 127.0.0.1:\d+ is in use"):
        WebServer(remote, "127.0.0.1", server.port).start()


def test_the_page_is_served_from_the_package_and_needs_no_network(http, show):
    _, _, server, _, _ = show
    page = http.get(url(server, "/"))
    assert page.status_code == 200 and "autoencoded" in page.text
    for name in ("app.js", "style.css"):
        assert http.get(url(server, f"/static/{name}")).status_code == 200
    for f in STATIC.iterdir():
        text = f.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), f.name  # no CDN, no remote font
        assert "http://" not in text.replace("http://www.w3.org", "") or f.name == "app.js", f.name
    assert 'name="viewport"' in page.text


def test_presets_models_and_midi_learn(http, show, tmp_path):
    store, remote, server, _, lines = show
    models = []
    surface = ControlSurface(store, osc_port=None, on_model=models.append, log=lines.append, midi_backend=_NoPorts())
    remote.surface, remote.on_model = surface, models.append
    try:
        r = http.get(url(server, "/api/v1/presets")).json()
        assert "noise-sweep" in r["presets"] and r["current"] is None
        assert http.post(url(server, "/api/v1/presets"), json={"name": "noise-sweep"}).status_code == 200
        assert surface.preset.name == "noise-sweep" and store.peek().noise > 0
        r = http.post(url(server, "/api/v1/presets"), json={"name": "../../etc/passwd"})
        assert r.status_code == 422 and "bad preset name" in r.json()["error"]
        assert http.post(url(server, "/api/v1/presets"), json={"nom": "x"}).status_code == 422
        r = http.post(url(server, "/api/v1/model"), json={"model": "demo"})
        assert r.status_code == 202 and models == ["demo"]
        r = http.post(url(server, "/api/v1/model"), json={"model": "x\u001b[2J"})  # a terminal escape
        assert r.status_code == 422 and models == ["demo"]
        r = http.post(url(server, "/api/v1/midi-learn"), json={"target": "noise/drift"})
        assert r.status_code == 200 and r.json() == {"learning": "noise/drift"}
        assert surface.stats()["midi_learn"] == "noise/drift"
        assert http.post(url(server, "/api/v1/midi-learn"), json={"target": "volume"}).status_code == 422
    finally:
        surface.stop()


class _NoPorts:
    """A MIDI system with no ports (what mido reports on a machine without controllers)."""

    def get_input_names(self):
        return []


def test_stopping_ends_open_streams_promptly(show):
    _, remote, server, preview, _ = show
    preview.write(np.zeros((72, 128, 3), np.uint8))
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"GET /preview.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert b"200 OK" in s.recv(4096)
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 3
    s.close()


def test_a_broken_stats_function_and_too_many_remotes(http):
    def broken():
        raise RuntimeError("stats bug")

    with WebServer(Remote(ParamStore(), status=broken), "127.0.0.1", 0) as server:
        r = http.get(url(server, "/api/v1/status"))
        assert r.status_code == 200 and r.json()["status_error"] == "RuntimeError: stats bug"
        ws_url = f"ws://127.0.0.1:{server.port}/api/v1/ws"
        with contextlib.ExitStack() as stack:
            open_ = [stack.enter_context(connect(ws_url)) for _ in range(32)]
            with pytest.raises(InvalidStatus):  # the 33rd is turned away; each one costs a look every 20 ms
                connect(ws_url, open_timeout=10)
            assert json.loads(open_[0].recv(timeout=10))["type"] == "params"  # the others keep working
