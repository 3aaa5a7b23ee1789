"""`--stats-json` (the figures scripts read, from the one stats_report function) and the latency probe
(`--input probe`): its code survives what outputs do to pictures, and it measures a known added delay."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

from autoencoded.cli import main
from autoencoded.live.control.params import ParamStore
from autoencoded.live.engines import open_engine
from autoencoded.live.io.latency_probe import ProbeSource, ProbeTap, decode, encode, report_lines
from autoencoded.live.io.sinks import NullSink
from autoencoded.live.loop.pipeline import Pipeline
from autoencoded.live.loop.stats import stats_report

from helpers import tiny_checkpoint

W, H = 64, 48


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    from autoencoded.export.onnx_export import export_checkpoint

    root = tmp_path_factory.mktemp("models")
    ckpt = tiny_checkpoint(root / "tiny.safetensors", width=W, height=H)
    return export_checkpoint(ckpt, root / "pack", log=lambda m: None)[0]


def test_stats_json_is_written_when_live_stops(pack, make_video, tmp_path, capsys):
    clip = make_video("in.mp4", n_frames=30, width=160, height=96, fps=30.0)
    path = tmp_path / "stats.json"
    rc = main(["live", "--model", str(pack), "--input", str(clip), "--output", "null", "--size", "96x72",
               "--max-frames", "45", "--osc-port", "0", "--stats-json", str(path)])
    err = capsys.readouterr().err
    assert rc == 0, err
    s = json.loads(path.read_text())
    for key in ("fps_in", "fps_out", "engine_ms_p50", "engine_ms_p99", "latency_ms_p50", "latency_ms_p99",
                "frames_out", "dropped", "faults", "outages"):
        assert key in s, key
    assert s["frames_out"] == 45 and s["frames_in"] >= 40
    assert s["faults"] == 0 and s["outages"] == 0 and isinstance(s["dropped"], int)
    assert 0 < s["engine_ms_p50"] <= s["engine_ms_p99"] and 0 < s["latency_ms_p50"] <= s["latency_ms_p99"]
    # a 30 fps file, 45 frames: the averages never overstate the file's pace (how far below it they fall
    # depends on how busy the machine is, which is the benchmarks' business)
    assert 0 < s["fps_in_avg"] <= 36 and 0 < s["fps_out_avg"] <= 40, s
    assert s["fps_out"] > 0, "the rate as of the stop, not decayed by the time taken to stop"
    assert s["sinks"] == ["null", "web preview"] and s["size"] == "96x72"  # the web remote shows the output too
    assert f"stats written to {path}" in err and "stopped: 45 frames out" in err


def test_stats_json_path_is_checked_before_anything_starts(pack, tmp_path, capsys):
    rc = main(["live", "--model", str(pack), "--input", "demo", "--output", "null",
               "--stats-json", str(tmp_path / "no" / "s.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "--stats-json" in err and "no such folder" in err


def test_status_and_stats_json_come_from_one_function(pack):
    p = Pipeline(ProbeSource(96, 72, 30), open_engine(pack, backend="onnxruntime", log=lambda m: None),
                 [NullSink()], fps=30, size=(96, 72), log=lambda m: None)
    final = p.run(max_frames=10)
    report = stats_report(final)
    assert report["frames_out"] == final["frames_out"] == 10
    assert report["faults"] == final["engine_faults"] and report["outages"] == final["source_outages"]
    json.dumps(report)  # plain JSON types only
    status = p.stats()  # what OSC /status and the web remote's /api/v1/status serve
    assert {k: status[k] for k in report} == report


@pytest.mark.parametrize("size", [(1280, 720), (256, 144), (96, 72)])
def test_probe_code_round_trips_and_survives_codecs(size):
    rng = np.random.default_rng(1)
    for n in [0, 1, 255, 256, 4097, 65535, *rng.integers(0, 65536, 20)]:
        frame = encode(int(n), *size)
        assert frame.shape == (size[1], size[0], 3) and frame.dtype == np.uint8
        assert decode(frame) == n
        # what outputs do: lossy compression (JPEG), soft edges, a darker and greyer picture, a rescale
        ok, jpg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 40])
        soft = cv2.GaussianBlur(cv2.imdecode(jpg, cv2.IMREAD_COLOR), (9, 9), 3)
        dim = (soft.astype(np.float32) * 0.5 + 40).astype(np.uint8)
        assert decode(cv2.resize(dim, (size[0] // 2 * 2 + 10, size[1] // 2 * 2 + 6))) == n


def test_probe_rejects_what_carries_no_code():
    rng = np.random.default_rng(2)
    assert decode(np.full((72, 128, 3), 128, np.uint8)) is None  # flat grey
    assert decode(rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)) is None  # noise
    assert decode(np.zeros((4, 4, 3), np.uint8)) is None  # too small
    # a frame torn between two codes (top half of one, bottom of the next) is refused by the CRC
    refused = 0
    for n in range(0, 60000, 997):
        a, b = encode(n, 128, 72), encode(n + 1, 128, 72)
        torn = np.concatenate([a[:36], b[36:]])
        got = decode(torn)
        assert got in (None, n, n + 1)
        refused += got is None
    assert refused > 0


class DelayedEngine:
    """The real engine, plus an extra wait per frame (the known added delay: a sleep asked for, and how long
    it really took, which on a busy machine is longer)."""

    def __init__(self, engine, delay_s: float) -> None:
        self._engine, self.delay_s = engine, delay_s
        self.slept_ms: list[float] = []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def reconstruct(self, frames):
        t0 = time.perf_counter()
        time.sleep(self.delay_s)
        self.slept_ms.append((time.perf_counter() - t0) * 1000.0)
        return self._engine.reconstruct(frames)


def _probe_p50(pack, delay_s: float, seconds: float = 2.5) -> tuple[float, float]:
    fps = 20.0  # a frame every 50 ms: the delay below fits in one interval, so frames never queue
    source = ProbeSource(96, 72, fps)
    engine = open_engine(pack, backend="onnxruntime", log=lambda m: None)
    tap = ProbeTap(NullSink(), source, log=lambda m: None)
    delayed = DelayedEngine(engine, delay_s)
    p = Pipeline(source, delayed if delay_s else engine, [tap],
                 params=ParamStore(mix=0.0), fps=fps, size=(96, 72), log=lambda m: None)
    p.run(duration=seconds)
    [r] = tap.report()
    assert r["frames"] >= seconds * fps * 0.6 and r["undecoded"] == 0, r
    assert report_lines([tap])[0].startswith("probe: null (handed over): latency p50")
    return r["p50_ms"], float(np.median(delayed.slept_ms)) if delayed.slept_ms else 0.0


def test_probe_measures_a_known_added_delay(pack):
    base, _ = _probe_p50(pack, 0.0)
    delayed, added = _probe_p50(pack, 0.025)
    assert added >= 25.0
    assert abs((delayed - base) - added) <= 10.0, (base, delayed, added)
