"""The README's pictures, made by the tool itself from the demo model.

    python demo/make_pictures.py [--run build/demo/run] [--out docs/img]

1. samples.png: the demo run's sample grid (frames, their reconstructions, prior samples), drawn again from
   its latest checkpoint by the trainer's own evaluation, so that it shows what this version draws;
2. before_after.png: frames of the demo clip followed by held black frames, put through
   `autoencoded render`; inputs on top, the model's output below (the black column shows the haze);
3. live.png: a still of `autoencoded live --input demo --noise 0.6 --overlay`;
4. foreign.png: footage the model never saw (../shared/footage/foreign: the portrait and the cameraman,
   public domain and CC0), three frames of each through `autoencoded render`, inputs on top;
5. dream.png: the contact sheet of the two knobs, a foreign clip (the portrait) and the trailer (2 s from
   second 20) through `autoencoded render --crop none` at noise 0 / 0.25 / 0.5 / 1 and memory 0.5 / 1,
   the same frame of each, the input first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from autoencoded.live.assets import DEMO_CLIP

ROOT = Path(__file__).resolve().parents[1]
FOREIGN = ROOT.parent / "shared" / "footage" / "foreign"
FOREIGN_CLIPS = ("astronaut_handheld.mp4", "camera_handheld.mp4")
TRAILER = ROOT.parent / "shared" / "footage" / "bbb_trailer.mp4"
# the contact sheet's columns: (label, render options)
KNOBS = (("noise 0", []), ("noise 0.25", ["--noise", "0.25"]), ("noise 0.5", ["--noise", "0.5"]),
         ("noise 1", ["--noise", "1"]), ("memory 0.5", ["--memory", "0.5"]), ("memory 1", ["--memory", "1"]))


def read_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        raise SystemExit(f"no frames in {path}")
    return frames


def autoencoded(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "autoencoded", *args], check=True)


def sample_grid(run: Path) -> Path:
    from autoencoded.training.config import TrainConfig
    from autoencoded.training.data import open_dataset
    from autoencoded.training.loop import Trainer

    if not (run / "config.json").is_file():
        raise SystemExit(f"no training run in {run}: run demo/make_demo_model.sh first")
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    trainer = Trainer(cfg, open_dataset(cfg.dataset), resume=True, progress=False)
    trainer.write_samples(trainer.evaluate())
    return max((run / "samples").glob("step-*.png"))


def foreign_strip(tmp: Path, out: Path) -> Path | None:
    """Inputs above outputs, three frames from each foreign clip, at the model's output size."""
    clips = [FOREIGN / name for name in FOREIGN_CLIPS]
    if not all(c.is_file() for c in clips):
        print(f"foreign.png skipped: {FOREIGN} not present", file=sys.stderr)
        return None
    top, bottom = [], []
    for clip in clips:
        autoencoded("render", str(clip), str(tmp / f"{clip.stem}.mp4"))
        originals, rendered = read_frames(clip), read_frames(tmp / f"{clip.stem}.mp4")
        rh, rw = rendered[0].shape[:2]
        for i in np.linspace(10, len(rendered) - 10, 3).round().astype(int):
            top.append(cv2.resize(originals[i], (rw, rh), interpolation=cv2.INTER_AREA))
            bottom.append(rendered[i])
    cv2.imwrite(str(out / "foreign.png"), np.vstack([np.hstack(top), np.hstack(bottom)]))
    return out / "foreign.png"


def labelled(frame: np.ndarray, text: str) -> np.ndarray:
    out = frame.copy()
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheet(tmp: Path, out: Path, model: str) -> Path | None:
    """One row a clip: its input frame, then the same frame rendered at each of KNOBS."""
    portrait = FOREIGN / FOREIGN_CLIPS[0]
    if not (portrait.is_file() and TRAILER.is_file()):
        print(f"dream.png skipped: {FOREIGN} or {TRAILER} not present", file=sys.stderr)
        return None
    excerpt = tmp / "trailer_20s.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "20", "-t", "2", "-i", str(TRAILER), "-an", str(excerpt)],
                   check=True)
    rows = []
    for clip in (portrait, excerpt):
        originals = read_frames(clip)
        at = len(originals) // 2
        row = []
        for label, options in KNOBS:
            rendered = tmp / f"{clip.stem}-{label.replace(' ', '_')}.mp4"
            autoencoded("render", str(clip), str(rendered), "--model", model, "--crop", "none", *options)
            frame = read_frames(rendered)[at]
            if not row:
                rh, rw = frame.shape[:2]
                row.append(labelled(cv2.resize(originals[at], (rw, rh), interpolation=cv2.INTER_AREA), "input"))
            row.append(labelled(frame, label))
        rows.append(np.hstack(row))
    cv2.imwrite(str(out / "dream.png"), np.vstack(rows))
    return out / "dream.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(ROOT / "build/demo/run"))
    ap.add_argument("--out", default=str(ROOT / "docs/img"))
    ap.add_argument("--model", default="demo", help="The pack the contact sheet renders with.")
    ap.add_argument("--only", choices=["dream"], default=None, help="Make only this picture.")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.only == "dream":
        with tempfile.TemporaryDirectory() as tmp:
            print(contact_sheet(Path(tmp), out, args.model))
        return

    shutil.copyfile(sample_grid(Path(args.run)), out / "samples.png")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = read_frames(DEMO_CLIP)
        h, w = clip[0].shape[:2]
        black = np.zeros_like(clip[0])
        writer = cv2.VideoWriter(str(tmp / "input.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
        for frame in clip + [black] * 10:
            writer.write(frame)
        writer.release()
        autoencoded("render", str(tmp / "input.avi"), str(tmp / "render.mp4"))
        rendered = read_frames(tmp / "render.mp4")
        originals = read_frames(tmp / "input.avi")
        if len(rendered) != len(originals):
            raise SystemExit(f"render gave {len(rendered)} frames for {len(originals)}")
        picks = [8, 35, 62, 90, 118, len(originals) - 1]
        rh, rw = rendered[0].shape[:2]
        top = [cv2.resize(originals[i], (rw, rh), interpolation=cv2.INTER_AREA) for i in picks]
        bottom = [rendered[i] for i in picks]
        grid = np.vstack([np.hstack(top), np.hstack(bottom)])
        cv2.imwrite(str(out / "before_after.png"), grid)

        autoencoded("live", "--input", "demo", "--output", str(tmp / "live.mp4"), "--noise", "0.6",
                    "--overlay", "--max-frames", "75", "--size", "854x480", "--osc-port", "0")
        cv2.imwrite(str(out / "live.png"), read_frames(tmp / "live.mp4")[-1])
        foreign_strip(tmp, out)
        contact_sheet(tmp, out, args.model)
    for name in ("samples.png", "before_after.png", "live.png", "foreign.png", "dream.png"):
        if (out / name).is_file():
            print(out / name)


if __name__ == "__main__":
    main()
