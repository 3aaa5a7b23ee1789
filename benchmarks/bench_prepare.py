"""Prepare throughput: frames/s and multiple of real time on a generated 1080p 24 fps H.264 clip.

    .venv/bin/python benchmarks/bench_prepare.py [--seconds 30] [--size 256x144] [--decoder ffmpeg|opencv]

The clip has a keyframe every 2 s, like streamed or disc video. Needs ffmpeg (apt) to make the clip (OpenCV's wheel cannot write H.264). Target: >= 10x real time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoencoded.sizes import parse_size  # noqa: E402
from autoencoded.training.prepare import prepare  # noqa: E402


def make_clip(path: Path, seconds: float) -> None:
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=24:duration={seconds}",
           "-c:v", "libx264", "-preset", "veryfast", "-g", "48", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--size", default="256x144")
    ap.add_argument("--decoder", choices=["ffmpeg", "opencv"], nargs="*", default=["ffmpeg", "opencv"])
    args = ap.parse_args()
    if not shutil.which("ffmpeg"):
        sys.exit("ffmpeg is needed to generate the H.264 test clip (apt install ffmpeg)")
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip1080.mp4"
        make_clip(clip, args.seconds)
        print(f"clip: 1920x1080 24 fps H.264, {args.seconds:g} s, {clip.stat().st_size / 1e6:.1f} MB; "
              f"{os.cpu_count()} CPUs")
        print("| decoder | frames | seconds | frames/s | x real time |")
        print("|---|---|---|---|---|")
        for dec in args.decoder:
            os.environ["AUTOENCODED_DECODER"] = dec
            t = time.perf_counter()
            meta, s = prepare([clip], Path(tmp) / f"ds-{dec}", size=parse_size(args.size, multiple=16), overwrite=True)
            dt = time.perf_counter() - t
            print(f"| {dec} | {s.kept} | {dt:.2f} | {s.decoded / dt:.0f} | {s.duration_s / dt:.1f} |")


if __name__ == "__main__":
    main()
