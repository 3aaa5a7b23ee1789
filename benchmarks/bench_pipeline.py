"""Live loop and render speed, measured in one run (issue 5).

    .venv/bin/python benchmarks/bench_pipeline.py [--model PACK] [--backend auto] [--seconds 8] [--json out.json]

Without --model it exports a randomly initialised `lite` model (256x144) to a temporary pack and runs
it with onnxruntime (speed does not depend on the weights). It measures:
  1. loop throughput: a cheap in-memory source (offering 1.25x the engine's rate) -> pipeline -> null
     sink, all at the model's size (the loop's own cost) and all at 1280x720 (with the resizes), against the bare engine (reconstruct() back to back),
     alternating the two --rounds times and taking the median ratio. Target: >= 0.90x.
  2. capture-to-sink latency from a 30 fps source, 1280x720 out. Target: p99 <= 2 frame intervals.
  3. a 720p 30 fps video file, looping, through the model to 1280x720: sustained without falling behind.
  4. offline render speed: frames/s and multiple of real time, at the model's size and upscaled to 720p.
  5. VJ sizes (issue 14): a 25 fps 2.35:1 1080p file (encoded as films are) through the model to 1920x1080
     and to 1280x720, each with a recording at that size, --vj-seconds (30) each. Targets: new frames out =
     source fps, 0 dropped, latency p99 <= 2 frame intervals (80 ms).
  6. the bare engine quiet and with one core busy (an x264 720p encode in another process), alternated:
     target >= 0.90x.
  5 and 6 run once per --settings entry, side by side in one sitting (SETTINGS: new = shipped; rgb24 = the
  same with rgb24 frames converted by ffmpeg, as before the I420 pipe; old = before issue 14: onnxruntime
  spinning on every core, recordings at x264 veryfast, rgb24). Each result carries the load average at its
  start and end.

    .venv/bin/python benchmarks/bench_pipeline.py --only vj [--settings new,rgb24,old] [--vj-clip F]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoencoded.live.engines import open_engine  # noqa: E402
from autoencoded.live.engines.frames import fit  # noqa: E402
from autoencoded.live.engines.ort_backend import OnnxRuntimeEngine, physical_cores  # noqa: E402
from autoencoded.live.engines.pack import read_pack  # noqa: E402
from autoencoded.live.io import sinks as sinks_module  # noqa: E402
from autoencoded.live.io.sinks import NullSink, RecorderSink  # noqa: E402
from autoencoded.live.io.sources import CameraClock, Reader, Source, VideoFileSource  # noqa: E402
from autoencoded.live.loop.pipeline import Pipeline  # noqa: E402
from autoencoded.live.render import render  # noqa: E402
from autoencoded.media import writers as writers_module  # noqa: E402
from autoencoded.media.writers import LIVE_PRESET, PIPE_I420  # noqa: E402


class SyntheticSource(Source):
    """Pre-made frames, delivered on a clock of `fps` (a camera that costs nothing to read)."""

    camera = True

    def __init__(self, width: int, height: int, fps: float, n: int = 16) -> None:
        self.fps, self.name = fps, f"synthetic {width}x{height}@{fps:g}"
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        self.frames = [np.roll(cv2.resize(base, (width, height)), 7 * i, axis=1) for i in range(n)]

    def open(self) -> Reader:
        src = self

        class _R(Reader):
            i, clock = 0, CameraClock(src.fps)

            def read(self):
                self.clock.wait()
                self.i += 1
                return src.frames[self.i % len(src.frames)]

        return _R()


def bare_engine_fps(engine, seconds: float) -> float:
    frame = fit(SyntheticSource(1280, 720, 30, n=1).frames[0], engine.width, engine.height)[None]
    for _ in range(5):
        engine.reconstruct(frame)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        engine.reconstruct(frame)
        n += 1
    return n / (time.perf_counter() - t0)


def run_loop(model, backend, source, size, fps, seconds) -> dict:
    engine = open_engine(model, backend=backend, log=lambda m: None)
    p = Pipeline(source, engine, [NullSink()], fps=fps, size=size, log=lambda m: None)
    p.start()
    time.sleep(1.0)  # warm-up, then measure over a clean window
    s0, t0 = p.stats(), time.perf_counter()
    time.sleep(seconds)
    s1, dt = p.stats(), time.perf_counter() - t0
    p.stop()
    out = dict(s1)
    out["fps_out_avg"] = round((s1["frames_out"] - s0["frames_out"]) / dt, 2)
    out["fps_in_avg"] = round((s1["frames_in"] - s0["frames_in"]) / dt, 2)
    out["new_frames_out_avg"] = round((s1["frames_out"] - s1["frames_repeated"]
                                       - s0["frames_out"] + s0["frames_repeated"]) / dt, 2)
    return out


BUSY_CMD = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-c:v", "libx264",
            "-preset", "medium", "-threads", "1", "-f", "null", "-"]  # one core busy, as OBS encoding would be


def vj_clip(folder: Path, seconds: float = 34.0) -> Path:
    """A 25 fps 2.35:1 (1920x816) H.264 file made from the demo clip, long enough not to loop in a run. Encoded
    as films are (x264's default preset: CABAC, B-frames), so it costs what a film costs to decode; 8 s are
    encoded and repeated by stream copy (a minute of encoding fewer on a busy machine)."""
    from autoencoded.live.assets import DEMO_CLIP

    clip, piece = folder / "vj-1920x816-25.mp4", folder / "vj-piece.mp4"
    if not clip.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(DEMO_CLIP), "-t", "8",
                        "-vf", "scale=1920:816,fps=25", "-c:v", "libx264", "-preset", "medium", "-crf", "20",
                        "-an", str(piece)], check=True)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(piece), "-t", str(seconds),
                        "-c", "copy", str(clip)], check=True)
    return clip


@dataclass(frozen=True)
class Settings:
    """The knobs the VJ sections compare: onnxruntime's threads and spinning, x264's preset for live
    recordings, and how frames reach the encoder (I420 converted here, or rgb24 converted by ffmpeg)."""

    spin: bool
    all_cores: bool
    preset: str
    pipe_i420: bool


SETTINGS = {
    "new": Settings(spin=False, all_cores=False, preset=LIVE_PRESET, pipe_i420=True),  # shipped
    "rgb24": Settings(spin=False, all_cores=False, preset=LIVE_PRESET, pipe_i420=False),  # before the I420 pipe
    "old": Settings(spin=True, all_cores=True, preset="veryfast", pipe_i420=False),  # before issue 14
}


def ort_engine(model, s: Settings):
    pack = read_pack(model)
    return OnnxRuntimeEngine(pack, device="cpu", threads=physical_cores() if s.all_cores else None, spin=s.spin)


def _cpu_seconds(stat: str) -> float:
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of this process's threads, by role (Linux /proc; {} elsewhere): the loop's Python
    threads by name, OpenCV's decoder threads, and the native pools (onnxruntime, OpenCV) as 'other'."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id}
    out: dict[str, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        name = names.get(int(tid)) or ("decode (libavcodec threads)" if comm.startswith("av:") else "other")
        role = "source reader (decode, BGR->RGB)" if name.startswith("source-reader") else \
            "recorder (I420, pipe)" if name.startswith("record") else name
        out[role] = out.get(role, 0.0) + _cpu_seconds(stat)
    return out


def process_cpu(pid: int) -> float:
    try:
        return _cpu_seconds(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return 0.0


def vj_run(model, clip: Path, size, seconds: float, tag: str, folder: Path) -> dict:
    s = SETTINGS[tag]
    src = VideoFileSource(clip)
    sinks_module.LIVE_PRESET, writers_module.PIPE_I420 = s.preset, s.pipe_i420
    try:
        rec = RecorderSink(folder / f"rec-{size[0]}x{size[1]}-{tag}.mp4", log=lambda m: None, overwrite=True)
        p = Pipeline(src, ort_engine(model, s), [rec], fps=src.fps, size=size, log=lambda m: None)
        p.start()
    finally:
        sinks_module.LIVE_PRESET, writers_module.PIPE_I420 = LIVE_PRESET, PIPE_I420
    load0 = os.getloadavg()[0]
    time.sleep(2.0)  # warm-up
    encoder = getattr(rec.recorder.writer, "proc", None) if rec.recorder else None
    s0, t0, c0 = p.stats(), time.perf_counter(), thread_cpu()
    e0 = process_cpu(encoder.pid) if encoder else 0.0
    time.sleep(seconds)
    s1, dt, c1 = p.stats(), time.perf_counter() - t0, thread_cpu()
    e1 = process_cpu(encoder.pid) if encoder else 0.0
    recorder = rec.recorder
    p.stop()
    new = (s1["frames_out"] - s1["frames_repeated"]) - (s0["frames_out"] - s0["frames_repeated"])
    # where the CPU goes: ms of CPU per new frame out, per thread role, and the encoder process
    cpu = {k: round(1000 * (v - c0.get(k, 0.0)) / max(new, 1), 2) for k, v in c1.items() if v - c0.get(k, 0.0) > 0}
    if encoder:
        cpu["ffmpeg encoder process"] = round(1000 * (e1 - e0) / max(new, 1), 2)
    cpu = dict(sorted(cpu.items(), key=lambda kv: -kv[1]))
    cpu["total (cores)"] = round(sum(cpu.values()) * new / dt / 1000, 2)
    return {"source_fps": src.fps, "fps_in": round((s1["frames_in"] - s0["frames_in"]) / dt, 2),
            "new_frames_out_fps": round(new / dt, 2), "dropped": s1["dropped"] - s0["dropped"],
            "latency_ms_p50": s1["latency_ms_p50"], "latency_ms_p99": s1["latency_ms_p99"],
            "latency_budget_ms": round(2000 / src.fps, 1), "engine_ms_p50": s1["engine_ms_p50"],
            "recorded_frames": recorder.slots if recorder else 0,
            "recorder_dropped": recorder.dropped if recorder else 0,
            "loadavg": [round(load0, 2), round(os.getloadavg()[0], 2)], "cpu_ms_per_frame": cpu}


def engine_busy(model, tag: str, rounds: int = 3, seconds: float = 3.0) -> dict:
    s = SETTINGS[tag]
    engine = ort_engine(model, s)
    quiet, busy = [], []
    load0 = os.getloadavg()[0]
    for _ in range(rounds):
        quiet.append(bare_engine_fps(engine, seconds))
        proc = subprocess.Popen(BUSY_CMD)
        try:
            time.sleep(1.0)
            busy.append(bare_engine_fps(engine, seconds))
        finally:
            proc.kill()
            proc.wait()
    engine.close()
    q, b = float(np.median(quiet)), float(np.median(busy))
    return {"engine": engine.name + (" spinning" if s.spin else ""), "quiet_fps": round(q, 1),
            "busy_fps": round(b, 1), "busy_vs_quiet": round(b / q, 3),
            "loadavg": [round(load0, 2), round(os.getloadavg()[0], 2)]}


def vj_sections(model, tmp: Path, seconds: float, tags: list[str], clip: Path | None = None) -> dict:
    res: dict = {}
    clip = clip or vj_clip(tmp)
    engines_done = set()
    for tag in tags:
        s = SETTINGS[tag]
        if (s.spin, s.all_cores) not in engines_done:  # the engine alone depends on its own settings only
            engines_done.add((s.spin, s.all_cores))
            keep(res, f"engine_one_core_busy_{tag}", engine_busy(model, tag))
        for size in ((1920, 1080), (1280, 720)):
            keep(res, f"vj_{size[1]}p_{tag}", vj_run(model, clip, size, seconds, tag, tmp))
    return res


def keep(res: dict, key: str, value: object) -> None:
    """A result, also shown at once on stderr (a run cut short still leaves the figures it made)."""
    res[key] = value
    print(f"{key}  {value}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model pack / checkpoint (default: random lite pack)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3, help="alternations of bare engine and loop")
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", choices=["all", "vj"], default="all", help="vj: sections 5 and 6 only")
    ap.add_argument("--vj-seconds", type=float, default=30.0)
    ap.add_argument("--settings", default="new,old",
                    help=f"settings compared in 5 and 6, comma-separated, first the shipped ones ({', '.join(SETTINGS)})")
    ap.add_argument("--vj-clip", type=Path, default=None,
                    help="the 25 fps 1080p-class file for 5 (default: made from the demo clip; takes a minute)")
    a = ap.parse_args()
    tags = [t.strip() for t in a.settings.split(",") if t.strip()]
    if not tags or any(t not in SETTINGS for t in tags):
        ap.error(f"--settings: choose among {', '.join(SETTINGS)}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    model = a.model
    if model is None:
        from autoencoded.export.onnx_export import random_pack

        random_pack("lite", tmp / "lite", 256, 144)
        model = tmp / "lite"
    engine = open_engine(model, backend=a.backend, log=lambda m: None)
    name, mw, mh = engine.name, engine.width, engine.height
    res: dict = {"engine": name, "model_size": f"{mw}x{mh}", "cpus": os.cpu_count(),
                 "loadavg_start": os.getloadavg()[0]}
    if a.only == "vj":
        engine.close()
        res.update(vj_sections(model, tmp, a.vj_seconds, tags, a.vj_clip))
        res["loadavg_end"] = os.getloadavg()[0]
        report(res, a.json)
        return

    # 1. throughput: bare engine and loop measured in alternation (the median ratio resists load changes)
    rounds = max(1, a.rounds)
    bare, loops = [], {"model_size": [], "720p": []}
    for _ in range(rounds):
        bare.append(bare_engine_fps(engine, a.seconds / rounds))
        # the source offers 25% more frames than the engine can take, so the engine is the bottleneck
        # without the source burning the CPU on frames nobody will use
        rate = 1.25 * bare[-1]
        for label, size in (("model_size", (mw, mh)), ("720p", (1280, 720))):  # source and output size
            s = run_loop(model, a.backend, SyntheticSource(*size, rate), size, rate, a.seconds / rounds)
            loops[label].append(s["new_frames_out_avg"])
    engine.close()
    res["bare_engine_fps"] = round(float(np.median(bare)), 2)
    for label, fps in loops.items():
        res[f"loop_fps_{label}"] = round(float(np.median(fps)), 2)
        res[f"loop_vs_engine_{label}"] = round(float(np.median(np.array(fps) / np.array(bare))), 3)

    # 2. latency from a 30 fps source
    s = run_loop(model, a.backend, SyntheticSource(1280, 720, 30), (1280, 720), 30, a.seconds)
    res.update(latency_ms_p50=s["latency_ms_p50"], latency_ms_p99=s["latency_ms_p99"],
               latency_budget_ms=round(2000 / 30, 1), latency_fps_out=s["fps_out_avg"],
               latency_dropped=s["dropped"])

    # 3. a 720p 30 fps file
    clip = tmp / "720p30.mp4"
    src = SyntheticSource(1280, 720, 30, n=60)
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (1280, 720))
    for f in src.frames * 3:
        w.write(f)
    w.release()
    s = run_loop(model, a.backend, VideoFileSource(clip), (1280, 720), 30, a.seconds)
    res.update(file720_fps_in=s["fps_in_avg"], file720_fps_out=s["fps_out_avg"],
               file720_new_frames_out=s["new_frames_out_avg"], file720_dropped=s["dropped"],
               file720_engine_ms_p50=s["engine_ms_p50"], file720_engine_ms_p99=s["engine_ms_p99"],
               file720_latency_ms_p99=s["latency_ms_p99"])

    # 4. render
    engine = open_engine(model, backend=a.backend, log=lambda m: None)
    for label, size in (("model_size", None), ("720p", (1280, 720))):
        r = render(clip, tmp / f"render-{label}.mp4", engine, batch=8, size=size, progress=False,
                   log=lambda m: None, overwrite=True)
        res[f"render_fps_{label}"] = r["render_fps"]
        res[f"render_x_realtime_{label}"] = r["x_realtime"]
    engine.close()
    res.update(vj_sections(model, tmp, a.vj_seconds, tags, a.vj_clip))
    res["loadavg_end"] = os.getloadavg()[0]
    report(res, a.json)


def report(res: dict, json_path: str | None) -> None:
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:<{width}}  {v}")
    if json_path:
        Path(json_path).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
