"""The web remote against bad JSON (issue 34, item 5), over real HTTP and a real WebSocket on loopback: huge
numbers, nesting over the bound, NaN and Infinity, wrong types and broken bytes get one 4xx line on every
route the app has, the WebSocket answers each with an error and stays open, and generated JSON (hypothesis)
never gets a 5xx."""

from __future__ import annotations

import itertools
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Mount
from websockets.sync.client import connect

from autoencoded.live.control.params import ParamStore
from autoencoded.live.control.surface import ControlSurface
from autoencoded.live.web.app import MAX_DEPTH, Remote, build_app
from autoencoded.live.web.preview import Preview
from autoencoded.live.web.server import WebServer

from helpers import FakeDevices

HUGE = "9" * 4000  # the integer that dropped the WebSocket and answered 500
CONTROLS = list(ParamStore().describe())
FIELDS = ["name", "model", "target", "set"]  # what the routes read besides the controls


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def obj(key: str, raw: str) -> str:
    """A JSON object of one entry whose value is `raw` as it is (JSON text that json.dumps would not write)."""
    return f'{{"{key}": {raw}}}'


HOSTILE = [  # (what, body): bad JSON for every route, each of the classes that answered 500
    *[(f"4000 digits in {key}", obj(key, HUGE)) for key in [*FIELDS, "memory", "cue/store", "noise/seed"]],
    ("a 400-digit integer pressing a button", obj("noise/reseed", "-" + HUGE[:400])),
    ("a 400-digit slot", obj("cue/store", HUGE[:400])),
    ("a 400-digit cue button", obj("cue/recall/3", HUGE[:400])),
    ("nesting past the bound", obj("noise", nested(MAX_DEPTH))),
    ("nesting past the parser", nested(20000)),
    ("1e999", '{"mix": 1e999}'), ("NaN", '{"mix": NaN}'), ("-Infinity", '{"cue/store": -Infinity}'),
    ("an array", "[1, 2]"), ("a string", '"noise"'), ("null", "null"), ("a number", "5"), ("nothing", ""),
    ("a string for a number", '{"noise": "loud"}'), ("an object for a number", '{"memory": {"x": 1}}'),
    ("a number for a name", '{"name": 5, "model": 5, "target": 5, "set": 5}'),
    ("a list for a name", '{"name": ["default"], "model": ["demo"], "target": ["noise"]}'),
    ("half a slot", '{"cue/store": 1.5}'), ("an unknown control", '{"volume": 1}'),
    ("cut short", '{"noise": 0.'), ("not UTF-8", b'{"noise": "\xff"}'),
]


def post_paths() -> list[str]:
    """Every route of the remote's app, as a path a POST can reach (a mount: a file under it)."""
    paths = [r.path + "/app.js" if isinstance(r, Mount) else r.path for r in build_app(Remote(ParamStore())).routes]
    assert {"/api/v1/params", "/api/v1/presets", "/api/v1/model", "/api/v1/midi-learn"} <= set(paths)
    return list(dict.fromkeys(paths))


@pytest.fixture(scope="module")
def show(tmp_path_factory):
    """A remote with everything a route can reach: presets and MIDI learn (a surface), model swaps, a preview."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
        mp.delenv("AUTOENCODED_PRESETS", raising=False)
        mp.delenv("AUTOENCODED_WEB_TOKEN", raising=False)
        store, models, lines = ParamStore(), [], []
        surface = ControlSurface(store, osc_port=None, on_model=models.append, log=lines.append,
                                 midi_backend=FakeDevices([]))
        remote = Remote(store, surface=surface, on_model=models.append, preview=Preview(), log=lines.append,
                        status=lambda: {"fps_out": 25.0})
        try:
            with WebServer(remote, "127.0.0.1", 0, log=lines.append) as server, \
                    httpx.Client(trust_env=False, timeout=30) as http:
                yield store, models, surface, server, http
        finally:
            surface.stop()


def post(show, path: str, body: str | bytes) -> httpx.Response:
    _, _, _, server, http = show
    return http.post(f"http://127.0.0.1:{server.port}{path}", content=body,
                     headers={"Content-Type": "application/json"})


def assert_one_4xx_line(r: httpx.Response, what: str) -> None:
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
    assert "\n" not in r.text.strip() and set(r.json()) == {"error"}, (what, r.text)


def test_every_route_answers_bad_json_with_one_4xx_line(show):
    store, models, surface, _, _ = show
    before = store.peek()
    for path, (what, body) in itertools.product(post_paths(), HOSTILE):
        assert_one_4xx_line(post(show, path, body), f"{what} to {path}")
    assert store.peek() == before and models == [] and surface.preset is None
    assert post(show, "/api/v1/params", '{"memory": 0.5, "noise": 1e308}').json() == \
        {"values": {"memory": 0.5, "noise": 1.0}}  # a large number a double holds is a number, clamped


def ws_answers(ws, until) -> list[dict]:
    """Messages from the remote up to and including the first one `until` accepts (pushes in between too)."""
    got = []
    while not got or not until(got[-1]):
        got.append(json.loads(ws.recv(timeout=30)))
    return got


def test_the_websocket_answers_bad_messages_and_stays_open(show):
    """`{"set":{"memory":<4000 digits>}}` ended the connection without a close frame, and so did any binary
    frame. Each bad message now gets one error message, and the same connection then plays the show."""
    store, _, _, server, _ = show
    before = store.peek()
    with connect(f"ws://127.0.0.1:{server.port}/api/v1/ws", open_timeout=30) as ws:
        for what, body in HOSTILE:
            frames = [body] if isinstance(body, bytes) else [body, obj("set", body), body.encode()]
            for frame in frames:
                ws.send(frame)
                errors = [m for m in ws_answers(ws, lambda m: m["type"] == "error") if m["type"] == "error"]
                assert len(errors) == 1 and errors[0]["error"], (what, frame[:60])
        assert store.peek() == before
        ws.send(json.dumps({"set": {"mix": 0.25}}))
        ws_answers(ws, lambda m: m["type"] == "params" and m["values"].get("mix") == 0.25)
        assert store.peek().mix == 0.25


# ---- generated JSON: whatever arrives, never a 5xx --------------------------------------------------------

numbers = st.one_of(st.integers(), st.floats(), st.integers(300, 4000).map(lambda n: int("9" * n)),
                    st.integers(300, 4000).map(lambda n: -int("9" * n)))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12))
keys = st.one_of(st.sampled_from(CONTROLS + FIELDS), st.text(max_size=8))
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(keys, inner, max_size=4)), max_leaves=10)
bodies = st.one_of(documents.map(json.dumps),  # json.dumps writes NaN and Infinity as they are: bad JSON too
                   st.dictionaries(st.sampled_from(CONTROLS + FIELDS), st.one_of(numbers, documents), min_size=1,
                                   max_size=4).map(json.dumps),  # what the routes read, so the actions run
                   st.integers(1, 3 * MAX_DEPTH).map(nested), st.binary(max_size=32))


GENERATED = settings(deadline=None, database=None,  # a few seconds each here: the bound keeps them short
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PATHS = post_paths()


@settings(GENERATED, max_examples=300)
@given(body=bodies)
def test_generated_json_never_gets_a_5xx_on_any_route(show, body):
    for path in PATHS:
        r = post(show, path, body)
        assert r.status_code < 500, (path, body[:80], r.status_code, r.text)
        if r.status_code >= 400:
            assert_one_4xx_line(r, f"{body[:80]!r} to {path}")


probes = itertools.count(1000)


@settings(GENERATED, max_examples=100)
@given(body=bodies)
def test_generated_messages_never_end_the_websocket(show, body):
    """Each generated message, as it is and as {"set": ...}, then a well-formed one that must come back."""
    store, _, _, server, _ = show
    with connect(f"ws://127.0.0.1:{server.port}/api/v1/ws", open_timeout=30) as ws:
        ws.send(body)
        if isinstance(body, str):
            ws.send(obj("set", body))
        seed = next(probes)
        ws.send(json.dumps({"set": {"noise/seed": seed}}))
        ws_answers(ws, lambda m: m["type"] == "params" and m["values"].get("noise/seed") == seed)
