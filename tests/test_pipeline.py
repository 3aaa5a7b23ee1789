"""The live loop with real threads, real video files, real torch and onnxruntime engines.

Fault injection wraps the real components: an engine subclass that raises or returns NaN for a few
frames, a video-file source whose reader stops or blocks mid-stream and comes back on reopen.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time

import numpy as np
import pytest

from autoencoded.cli import main
from autoencoded.errors import UserError
from autoencoded.live.control.params import ParamStore
from autoencoded.live.engines import open_engine
from autoencoded.live.engines.frames import fit, upscale
from autoencoded.live.engines.torch_backend import TorchEngine
from autoencoded.live.io.sinks import NullSink, RecorderSink
from autoencoded.live.io.sources import VideoFileReader, VideoFileSource
from autoencoded.live.loop import pipeline
from autoencoded.live.loop.framer import Framer
from autoencoded.live.loop.pipeline import Pipeline

from helpers import read_video, tiny_checkpoint

W, H = 64, 48  # model size
OUT = (96, 72)  # output size


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A randomly initialised tiny lite model (a real model) as a checkpoint and as an exported pack."""
    from autoencoded.export.onnx_export import export_checkpoint

    root = tmp_path_factory.mktemp("models")
    ckpt = tiny_checkpoint(root / "tiny.safetensors", W, H, he_init=True)  # an output that follows its input
    pack, _ = export_checkpoint(ckpt, root / "pack", log=lambda m: None)
    return {"torch": ckpt, "onnxruntime": pack}


@pytest.fixture
def clip(make_video):
    return make_video("in.mp4", n_frames=20, width=160, height=96, fps=30.0)


class CollectSink(NullSink):
    """An in-memory sink that keeps every frame and when it came."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[float, np.ndarray]] = []

    def write(self, frame: np.ndarray) -> None:
        super().write(frame)
        self.log.append((time.perf_counter(), frame))


def count_frames(path) -> tuple[int, str, int, int]:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames,r_frame_rate,width,height", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    s = json.loads(out)["streams"][0]
    return int(s["nb_read_frames"]), s["r_frame_rate"], s["width"], s["height"]


def recorded_slots(collect: CollectSink, fps: float) -> int:
    """How many frames a real-time recording beside `collect` holds: the first frame out to the last."""
    return int((collect.log[-1][0] - collect.log[0][0]) * fps) + 1


def expected_outputs(engine, frames) -> list[np.ndarray]:
    small = engine.reconstruct(np.stack([fit(f, W, H) for f in frames]))  # one batch: the same numbers
    return [upscale(f, *OUT) for f in small]


def matches_one_of(frame, candidates, tol: int = 1) -> bool:
    return any(np.abs(frame.astype(np.int16) - c).max() <= tol for c in candidates)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_video_file_through_engine_into_recorder(models, clip, tmp_path, backend):
    engine = open_engine(models[backend], backend=backend, log=lambda m: None)
    expected = expected_outputs(engine, read_video(clip))
    out = tmp_path / "out.mp4"
    collect = CollectSink()
    p = Pipeline(VideoFileSource(clip), engine, [RecorderSink(out, log=lambda m: None), collect], fps=30, size=OUT, crop="center",
                 log=lambda m: None)
    stats = p.run(max_frames=30)
    # the recording keeps real time: it lasts from the first frame out through the last one's slot at 30 fps
    assert count_frames(out)[1:] == ("30/1", *OUT)
    assert abs(count_frames(out)[0] - recorded_slots(collect, 30)) <= 1
    assert stats["frames_out"] == 30 and stats["engine_faults"] == 0 and stats["source_outages"] == 0
    assert stats["model"].startswith(backend)
    # every frame that reached the sinks is the model's reconstruction of a frame of the file
    assert all(matches_one_of(f, expected) for _, f in collect.log)
    assert engine.model is None if backend == "torch" else True  # the pipeline closed its engine


class FaultyEngine(TorchEngine):
    """The real torch engine, misbehaving on calls listed in `faults`: {call: 'raise'|'nan_z'|'nan_image'}."""

    def __init__(self, *a, faults: dict[int, str], **kw) -> None:
        super().__init__(*a, **kw)
        self.faults, self.calls = faults, 0

    def _fault(self) -> str | None:
        return self.faults.get(self.calls)

    def reconstruct(self, frames):
        self.calls += 1
        f = self._fault()
        if f == "raise":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if f == "nan_image":
            return self.decode(np.full((len(frames), self.z_dim), np.nan, np.float32))
        return super().reconstruct(frames)

    def encode(self, frames):
        self.calls += 1
        mu, log_sigma = super().encode(frames)
        if self._fault() == "nan_z":
            mu[:] = np.nan
        if self._fault() == "raise":
            raise RuntimeError("boom")
        return mu, log_sigma


def test_engine_faults_pass_through_then_recover(models, clip):
    faults = {3: "raise", 4: "raise", 5: "nan_image", 9: "nan_z", 10: "nan_z"}
    engine = FaultyEngine(models["torch"], faults=faults)
    ref = open_engine(models["torch"], backend="torch", log=lambda m: None)
    logs: list[str] = []
    params = ParamStore()
    p = Pipeline(VideoFileSource(clip), engine, [NullSink()], params=params, size=OUT, crop="center", log=logs.append)
    frames = read_video(clip)[:11]
    outs = []
    for i, f in enumerate(frames, start=1):
        params.set("noise", 0.0 if i < 8 else 0.3)  # calls 8+: encode -> latent noise -> decode
        outs.append(p.process(f))
    expect = expected_outputs(ref, frames)
    for i, (f, out) in enumerate(zip(frames, outs, strict=True), start=1):
        if i in faults:
            np.testing.assert_array_equal(out, fit(f, *OUT), err_msg=f"frame {i} passes the input through")
        elif i < 8:
            assert np.abs(out.astype(np.int16) - expect[i - 1]).max() <= 1, f"frame {i} is the model's"
        else:
            assert not np.array_equal(out, fit(f, *OUT))
    assert p.stats()["engine_faults"] == 5
    assert sum("passing frames through" in m for m in logs) == 2  # one line per streak, not per frame
    assert sum("recovered after" in m for m in logs) == 2
    assert "recovered after 3 faulty frame(s)" in [m for m in logs if "recovered after" in m][0]


def test_engine_fault_can_hold_the_last_good_frame(models, clip):
    engine = FaultyEngine(models["torch"], faults={2: "raise", 3: "nan_image"})
    p = Pipeline(VideoFileSource(clip), engine, [NullSink()], size=OUT, crop="center", on_fault="last", log=lambda m: None)
    frames = read_video(clip)[:4]
    outs = [p.process(f) for f in frames]
    np.testing.assert_array_equal(outs[1], outs[0])
    np.testing.assert_array_equal(outs[2], outs[0])
    assert not np.array_equal(outs[3], outs[0])


def test_engine_faults_in_the_running_loop(models, clip):
    engine = FaultyEngine(models["torch"], faults={i: "raise" for i in range(5, 15)})
    logs: list[str] = []
    collect = CollectSink()
    p = Pipeline(VideoFileSource(clip), engine, [collect], fps=30, size=OUT, crop="center", log=logs.append)
    stats = p.run(max_frames=40)
    assert stats["engine_faults"] == 10 and stats["frames_out"] == 40
    assert any("recovered after 10 faulty frame(s)" in m for m in logs)
    expected = expected_outputs(open_engine(models["torch"], backend="torch", log=lambda m: None), read_video(clip))
    assert matches_one_of(collect.log[-1][1], expected), "the model is back in the picture"


def test_mix_and_noise_controls(models, clip):
    params = ParamStore(mix=0.0)
    p = Pipeline(VideoFileSource(clip), open_engine(models["torch"], backend="torch", log=lambda m: None),
                 [NullSink()], params=params, size=OUT, crop="center", log=lambda m: None)
    f = read_video(clip)[0]
    np.testing.assert_array_equal(p.process(f), fit(f, *OUT))  # all dry
    params.set("mix", 1.0)
    clean = p.process(f)
    params.update({"noise": 1.0, "noise/max": 4.0})
    noisy = p.process(f)
    assert np.abs(noisy.astype(np.int16) - clean).mean() > 0.5
    params.set("mix", 0.5)
    half = p.process(f).astype(np.int16)
    assert np.abs(half - fit(f, *OUT)).mean() > 0.5


def test_only_the_source_thread_frames_and_the_framing_rides_down_with_the_frame(models, clip, monkeypatch):
    """The feed fits each frame with the framer and hands it down with its Framing: the engine and sink
    threads never ask the framer again (the input's picture under mix 0.5 included), so its cache is the
    source thread's alone and no lock guards it."""
    asked: set[tuple[str, str]] = set()

    class WatchedFramer(Framer):
        def fit(self, frame):
            asked.add(("fit", threading.current_thread().name))
            return super().fit(frame)

        def framing(self, frame, width, height):
            asked.add(("framing", threading.current_thread().name))
            return super().framing(frame, width, height)

    monkeypatch.setattr(pipeline, "Framer", WatchedFramer)
    collect = CollectSink()
    p = Pipeline(VideoFileSource(clip), open_engine(models["torch"], backend="torch", log=lambda m: None),
                 [collect], params=ParamStore(mix=0.5), size=OUT, crop="center", log=lambda m: None)
    p.run(max_frames=12)
    assert len(collect.log) >= 12 and p.stats()["loop_errors"] == 0
    assert asked == {("fit", "source"), ("framing", "source")}  # framing: the one shape, worked out in fit
    frames = read_video(clip)
    engine = open_engine(models["torch"], backend="torch", log=lambda m: None)
    halves = [np.rint(fit(f, *OUT) * np.float32(0.5) + wet * np.float32(0.5)).astype(np.uint8)
              for f, wet in zip(frames, expected_outputs(engine, frames), strict=True)]
    assert all(matches_one_of(frame, halves, tol=2) for _, frame in collect.log)  # half of it the input's picture


class StoppingFileSource(VideoFileSource):
    """A real video file whose first reader stops ('stop') or hangs ('block') after `after` frames; the
    reopened reader plays normally, like a camera that drops out and comes back."""

    def __init__(self, path, fault: str, after: int = 10) -> None:
        super().__init__(path)
        self.fault, self.after, self.opens = fault, after, 0
        self.release = threading.Event()

    def open(self):
        self.opens += 1
        reader = VideoFileReader(self.path, True)
        if self.opens > 1:
            return reader
        src, inner = self, reader.read

        def read():
            reader.n = getattr(reader, "n", 0) + 1
            if reader.n > src.after:
                if src.fault == "block":
                    src.release.wait()
                return None
            return inner()

        reader.read = read
        return reader


@pytest.mark.parametrize("fault", ["stop", "block"])
def test_source_outage_holds_the_picture_and_recovers(models, make_video, tmp_path, fault):
    # long enough that the reopened reader is still playing when the run stops
    src = StoppingFileSource(make_video("in.mp4", n_frames=90, width=160, height=96, fps=30.0), fault)
    out = tmp_path / "out.mp4"
    collect = CollectSink()
    logs: list[str] = []
    p = Pipeline(src, open_engine(models["torch"], backend="torch", log=lambda m: None),
                 [RecorderSink(out, log=lambda m: None), collect], fps=30, size=OUT, crop="center", log=logs.append,
                 # a generous open_timeout: the outage under test is the stall after the first frames, and a
                 # loaded machine once took over the default 5 s to open the file (the outage then read
                 # "did not open")
                 feed_options=dict(stall_timeout=0.3, min_backoff=0.2, open_timeout=60))

    def stop_after_recovery(stats: dict) -> None:
        # stop on the event, not on a frame count: a slow machine may read the first frames slower than the
        # outputs repeat them, and a fixed count then ends the run before the stall is seen
        if p.feed.outages and p.feed.outages[0]["end"] is not None:
            if time.perf_counter() - p.feed.outages[0]["end"] > 0.2:
                p.stop()

    try:
        stats = p.run(duration=30, status=stop_after_recovery, status_every=0.05)
    finally:
        src.release.set()
    assert stats["source_outages"] == 1 and stats["source_recoveries"] == 1 and stats["frames_held"] > 0
    o = p.feed.outages[0]
    assert ("stopped" if fault == "stop" else "stalled") in o["first_reason"] and o["end"] is not None
    during = [f for t, f in collect.log if o["start"] <= t <= o["end"]]
    assert during, "frames kept going out while the source was down"
    assert abs(count_frames(out)[0] - recorded_slots(collect, 30)) <= 1
    assert any("recovered" in m for m in logs)


def test_model_hot_swap_and_failed_swap(models, clip, tmp_path):
    logs: list[str] = []
    collect = CollectSink()
    p = Pipeline(VideoFileSource(clip), open_engine(models["torch"], backend="torch", log=lambda m: None), [collect],
                 fps=30, size=OUT, crop="center", log=logs.append, threads=3)
    p.start()
    try:
        fut = p.request_model(str(models["onnxruntime"]), backend="onnxruntime")
        # a swapped-in model keeps live's --threads
        assert fut.result(timeout=60) == "onnxruntime (CPUExecutionProvider, 3 threads)"
        n = collect.frames
        deadline = time.monotonic() + 30
        while collect.frames < n + 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert collect.frames >= n + 10, "frames keep flowing after the swap"
        assert p.stats()["model"].startswith("onnxruntime")

        bad = p.request_model(str(tmp_path / "no-such-model"))
        assert isinstance(bad.exception(timeout=60), UserError)
        st = p.stats()
        assert "no-such-model" in st["model_error"] and st["model"].startswith("onnxruntime")
        assert not st["model_loading"] and p.running
        n = collect.frames
        deadline = time.monotonic() + 30
        while collect.frames < n + 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert collect.frames >= n + 5, "a failed load does not interrupt the stream"
    finally:
        p.stop()
    assert any("still playing onnxruntime" in m for m in logs)


def test_live_command_records_a_file(models, clip, tmp_path, capsys):
    out = tmp_path / "live.mp4"
    rc = main(["live", "--model", str(models["onnxruntime"]), "--input", str(clip), "--output", str(out),
               "--output", "null", "--size", "96x72", "--max-frames", "20", "--overlay", "--threads", "2"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "onnxruntime (CPUExecutionProvider, 2 threads)" in err
    frames, rate, w, h = count_frames(out)
    assert (rate, w, h) == ("30/1", 96, 72)
    # a real-time recording: as many frames as 30 fps fill from the first frame out to the last, and the
    # summary's figures add up to the file's
    slots, kept, repeats = map(int, re.search(r"\((\d+) frames at 30 fps = (\d+) new \+ (\d+) repeats", err).groups())
    assert slots == frames == kept + repeats and kept <= 20, err
    assert "stopped: 20 frames out" in err and "Traceback" not in err


def test_live_command_bad_input_is_one_line(models, tmp_path, capsys):
    rc = main(["live", "--model", str(models["torch"]), "--input", str(tmp_path / "nothing.mp4"), "--output", "null"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and err.startswith("error: --input")
