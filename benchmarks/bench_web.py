"""The web remote's cost to the live loop (issue 15): does 200 API requests a second keep the loop at >= 95% of
its frame rate?

    .venv/bin/python benchmarks/bench_web.py [--seconds 8] [--rounds 3] [--rate 200] [--fps 30] [--json out.json]

A live loop as `autoencoded live` builds it (the demo model on ONNX Runtime, a camera-like synthetic source at
--fps, 1280x720 out to a null sink, the Stage's web remote and preview sink) runs in this process. Another
process plays the clients, in phases that alternate --rounds times:
  quiet    nobody connected;
  api      --rate requests a second over keep-alive HTTP (half POST /api/v1/params moving the noise within
           0.45..0.55, which the loop plays with noise on in every phase; a quarter
           GET /api/v1/status, a quarter GET /api/v1/params) and a WebSocket following the changes it causes;
  preview  the same, plus a browser-like client reading /preview.mjpg.
Per phase: output frames a second (new frames from the engine, not repeats), requests served and their
latency. The ratios are api/quiet and preview/quiet from adjacent phases, median over the rounds.
Target: api/quiet >= 0.95. The load process shares this machine's cores with the loop (a phone on the LAN
would not): a conservative measure. Say the load average during the run when quoting the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def load(url: str, rate: float, seconds: float, preview: bool, out: str) -> None:
    """The client process: paced requests, a WebSocket, optionally an MJPEG reader; writes its counts as JSON."""
    import httpx
    from websockets.sync.client import connect

    stop = threading.Event()
    got = {"ws_messages": 0, "preview_bytes": 0}

    def follow_ws() -> None:
        with connect(url.replace("http://", "ws://") + "api/v1/ws") as ws:
            while not stop.is_set():
                try:
                    ws.recv(timeout=0.2)
                    got["ws_messages"] += 1
                except TimeoutError:
                    continue

    def watch() -> None:
        with httpx.Client(trust_env=False, timeout=10) as c, c.stream("GET", url + "preview.mjpg") as r:
            for chunk in r.iter_bytes():
                got["preview_bytes"] += len(chunk)
                if stop.is_set():
                    return

    threads = [threading.Thread(target=follow_ws, daemon=True)]
    if preview:
        threads.append(threading.Thread(target=watch, daemon=True))
    for t in threads:
        t.start()
    lat, errors, sent = [], 0, 0
    with httpx.Client(base_url=url, trust_env=False, timeout=10) as c:
        c.get("api/v1/params")  # connected before the clock starts
        start = time.monotonic()  # the same clock as the loop's process (CLOCK_MONOTONIC)
        t0 = time.perf_counter()
        while True:
            now = time.perf_counter()
            if now - t0 >= seconds:
                break
            due = t0 + sent / rate
            if due > now:
                time.sleep(due - now)
            k = sent % 4
            s = time.perf_counter()
            if k in (0, 2):
                r = c.post("api/v1/params", json={"noise": 0.45 + (sent % 100) / 1000})
            elif k == 1:
                r = c.get("api/v1/status")
            else:
                r = c.get("api/v1/params")
            lat.append((time.perf_counter() - s) * 1000)
            errors += r.status_code >= 400
            sent += 1
        elapsed = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join(timeout=2)
    lat.sort()
    Path(out).write_text(json.dumps({"start": start, "end": start + elapsed, "requests": sent, "rate": sent / elapsed, "errors": errors,
                                     "p50_ms": lat[len(lat) // 2], "p99_ms": lat[int(len(lat) * 0.99)], **got}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--load", nargs=5, metavar=("URL", "RATE", "SECONDS", "PREVIEW", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load:
        url, rate, seconds, preview, out = args.load
        load(url, float(rate), float(seconds), preview == "1", out)
        return

    from bench_pipeline import SyntheticSource

    from autoencoded.live.control.params import ParamStore
    from autoencoded.live.engines import open_engine
    from autoencoded.live.io.sinks import NullSink
    from autoencoded.live.loop.pipeline import Pipeline
    from autoencoded.live.stage import Stage

    # noise stays on (0.45..0.55) in every phase, so that the engine does the same work (encode, latent
    # noise, decode) whether requests come or not: the phases differ by the requests alone
    store = ParamStore(noise=0.5)
    stage = Stage(store, web="127.0.0.1:0", log=lambda line: None)
    engine = open_engine(None, backend="onnxruntime", log=lambda line: None)
    pipeline = Pipeline(SyntheticSource(1280, 720, args.fps), engine, [NullSink(), *stage.sinks], params=store,
                        fps=args.fps, size=(1280, 720), log=lambda line: None, modulate=stage.modulate)
    pipeline.start()
    stage.start(status=pipeline.stats, on_model=pipeline.request_model)
    url = f"http://127.0.0.1:{stage.web.port}/"
    print(f"engine {engine.name}; loop target {args.fps:g} fps at 1280x720; {args.rate:g} requests/s; "
          f"{args.seconds:g} s a phase, {args.rounds} rounds; load average {os.getloadavg()[0]:.2f} at start")
    time.sleep(3)  # warm up

    samples: list[tuple[float, int]] = []  # (monotonic time, engine frames so far), every 20 ms
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.02):
            samples.append((time.monotonic(), pipeline.stats()["frames_processed"]))

    threading.Thread(target=sample, daemon=True).start()

    def fps_between(a: float, b: float) -> float:
        inside = [(t, n) for t, n in samples if a <= t <= b]
        (ta, na), (tb, nb) = inside[0], inside[-1]
        return (nb - na) / (tb - ta)

    def phase(kind: str) -> dict:
        t0 = time.monotonic()
        client = None
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
            result_path = tmp.name
        if kind != "quiet":
            client = subprocess.Popen([sys.executable, __file__, "--load", url, str(args.rate), str(args.seconds),
                                       "1" if kind == "preview" else "0", result_path])
            client.wait()
        else:
            time.sleep(args.seconds)
        out = {"phase": kind, "engine_ms_p50": pipeline.stats()["engine_ms_p50"], "load": os.getloadavg()[0]}
        if client is not None:
            out.update(json.loads(Path(result_path).read_text()))
            out["fps"] = fps_between(out["start"], out["end"])  # while the requests came, not the start-up
        else:
            out["fps"] = fps_between(t0, time.monotonic())
        os.unlink(result_path)
        return out

    rows = []
    try:
        for _ in range(args.rounds):
            for kind in ("quiet", "api", "quiet", "preview"):
                row = phase(kind)
                rows.append(row)
                extra = (f"  {row['rate']:.0f} req/s served, {row['errors']} errors, p50/p99 {row['p50_ms']:.1f}/"
                         f"{row['p99_ms']:.1f} ms, {row['ws_messages']} pushes" if "rate" in row else "")
                print(f"{kind:8s} {row['fps']:6.2f} fps  engine p50 {row['engine_ms_p50']:5.1f} ms  load "
                      f"{row['load']:.2f}{extra}", flush=True)
    finally:
        sampling.set()
        stage.stop()
        pipeline.stop()
    ratios = {"api": [], "preview": []}
    for i in range(0, len(rows), 2):
        quiet, loaded = rows[i], rows[i + 1]
        ratios[loaded["phase"]].append(loaded["fps"] / quiet["fps"])
    summary = {k: statistics.median(v) for k, v in ratios.items() if v}
    print(f"api/quiet {summary['api']:.3f} (target >= 0.95), preview/quiet {summary['preview']:.3f}; "
          f"ratios per round: {json.dumps({k: [round(x, 3) for x in v] for k, v in ratios.items()})}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "ratios": ratios, "median": summary}, indent=1))


if __name__ == "__main__":
    main()
