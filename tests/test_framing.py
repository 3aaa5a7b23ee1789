"""--crop for live and render through the real commands, on a 2.35:1 film and on a 4:3 clip stored with
non-square pixels (352x288 with 128:117 pixels, as ffmpeg's setsar marks it), into the demo model's 16:9;
and render's --size as the whole output frame."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from autoencoded.cli import main
from autoencoded.media.tools import have_ffmpeg

from helpers import read_video, streams

pytestmark = pytest.mark.skipif(not have_ffmpeg(), reason="ffmpeg/ffprobe are not installed")

RED, BLUE, GREEN, YELLOW = (230, 30, 30), (30, 30, 230), (30, 200, 30), (230, 230, 30)
# name -> (stored width, height, pixel aspect for setsar, display aspect)
CLIPS = {"scope": (470, 200, "1/1", 2.35), "pal43": (352, 288, "128/117", 352 * 128 / 117 / 288)}


def striped_clip(path: Path, width: int, height: int, sar: str, frames: int = 12) -> Path:
    """Grey picture, a stripe 10% wide on each edge: red left, blue right, green top, yellow bottom."""
    img = np.full((height, width, 3), 128, np.uint8)
    sx, sy = width // 10, height // 10
    img[:sy], img[-sy:] = GREEN, YELLOW
    img[:, :sx], img[:, -sx:] = RED, BLUE
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
                    "-framerate", "25", "-i", "-", "-vf", f"setsar=sar={sar}:max=1000", "-c:v", "libx264", "-pix_fmt", "yuv444p",
                    "-crf", "10", f"file:{path}"], input=img.tobytes() * frames, check=True)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("framing")
    return {name: striped_clip(root / f"{name}.mp4", w, h, sar) for name, (w, h, sar, _) in CLIPS.items()}


def picture(frame: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """(x, y, w, h) of the non-black part of a frame, and that part."""
    lit = frame.astype(np.int16).max(axis=2) > 40
    rows, cols = np.nonzero(lit.mean(axis=1) > 0.5)[0], np.nonzero(lit.mean(axis=0) > 0.5)[0]
    x0, x1, y0, y1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    return (x0, y0, x1 - x0, y1 - y0), frame[y0:y1, x0:x1]


def near(pixel, colour, tol: int = 60) -> bool:
    return bool(np.abs(np.asarray(pixel, int) - colour).max() <= tol)


def check(frame: np.ndarray, clip: str, mode: str) -> None:
    """The picture in a 16:9 frame as `mode` must leave it."""
    fh, fw = frame.shape[:2]
    (x, y, w, h), pic = picture(frame)
    aspect = CLIPS[clip][3]
    mid_row, mid_col = pic[h // 2], pic[:, w // 2]
    edges = {"left": mid_row[2], "right": mid_row[-3], "top": mid_col[2], "bottom": mid_col[-3]}
    fitted = mode in ("fit", "auto")  # both clips are cut by more than 10% at 16:9: auto fits them
    if fitted:
        if aspect > 16 / 9:  # black bars above and below; the whole width, at the picture's own aspect
            assert w == fw and abs(h - fw / aspect) <= 3 and y > 0, (x, y, w, h)
        else:  # black bars left and right, at the display aspect (the pixel aspect honoured)
            assert h == fh and abs(w - fh * aspect) <= 3 and x > 0, (x, y, w, h)
        assert all(near(edges[k], c) for k, c in (("left", RED), ("right", BLUE), ("top", GREEN),
                                                  ("bottom", YELLOW))), edges
    else:
        assert (x, y, w, h) == (0, 0, fw, fh), "no black bars"
        whole = mode == "none"
        sides = all(near(edges[k], c) for k, c in (("left", RED), ("right", BLUE)))
        ends = all(near(edges[k], c) for k, c in (("top", GREEN), ("bottom", YELLOW)))
        if whole:
            assert sides and ends, edges
        elif aspect > 16 / 9:  # centre crop of a wide film: its sides are cut, its top and bottom kept
            assert not sides and ends, edges
        else:  # centre crop of a 4:3 picture: top and bottom cut (forehead and chin), sides kept
            assert sides and not ends, edges


SAID = {"auto": "fitted whole", "fit": "fitted whole", "center": "centre cropped", "none": "stretched"}


@pytest.mark.parametrize("mode", ["auto", "center", "fit", "none"])
@pytest.mark.parametrize("clip", list(CLIPS))
def test_render_crop_modes(clips, tmp_path, capsys, clip, mode):
    out = tmp_path / "out.mp4"
    # side by side: the left picture is the input as the model sees it
    assert main(["render", str(clips[clip]), str(out), "--crop", mode, "--side-by-side", "--size", "640x180"]) == 0
    said = capsys.readouterr().out
    line = next(ln for ln in said.splitlines() if ln.startswith("framing:"))
    assert SAID[mode] in line and "16:9" in line, line
    if clip == "pal43":
        assert "352x288 with 128:117 pixels (4:3)" in line, line
    frame = read_video(out, limit=1)[0]
    assert frame.shape == (180, 640, 3)
    check(frame[:, :320], clip, mode)


@pytest.mark.parametrize("mode", ["auto", "center", "fit", "none"])
@pytest.mark.parametrize("clip", list(CLIPS))
def test_live_crop_modes(clips, tmp_path, capsys, clip, mode):
    out = tmp_path / "rec.mp4"
    # all dry (--mix 0): the output is the input as the model sees it
    assert main(["live", "--input", str(clips[clip]), "--output", str(out), "--crop", mode, "--mix", "0",
                 "--size", "320x180", "--max-frames", "3", "--osc-port", "0"]) == 0
    said = capsys.readouterr().err
    line = next(ln for ln in said.splitlines() if ln.startswith("framing:"))
    assert SAID[mode] in line, line
    check(read_video(out, limit=1)[0], clip, mode)


def test_render_size_is_the_whole_frame(clips, tmp_path, capsys):
    """--side-by-side --size 1280x720 is a 1280x720 file; each 640x720 half shows a 16:9 picture with bars."""
    out = tmp_path / "sbs.mp4"
    assert main(["render", str(clips["scope"]), str(out), "--side-by-side", "--size", "1280x720"]) == 0
    v = streams(out)["video"]
    assert (v["width"], v["height"]) == (1280, 720)
    half = read_video(out, limit=1)[0][:, 640:].astype(int)  # the model's 16:9 picture in a 640x720 half
    lit = half.max(axis=2) >= 24
    lit_rows = np.nonzero(lit.any(axis=1))[0]
    # 180 black rows above and below (to the scaler's few rows), so the picture is not stretched to the half
    assert lit_rows.min() >= 176 and lit_rows.max() < 544, (lit_rows.min(), lit_rows.max())
    # ... nor shrunk: it spans the half's width and fills its 360 rows; the model may paint a few of them
    # black (the clip's own letterbox, which a model that sees its input keeps)
    band = lit[180:540]
    cols = np.flatnonzero(band.any(axis=0))  # a dark edge column of the model's own is no shrink
    assert cols.min() <= 8 and cols.max() >= band.shape[1] - 9 and band.any(axis=1).mean() > 0.75, (
        cols.min(), cols.max(), band.any(axis=1).mean())
    assert main(["render", str(clips["scope"]), str(tmp_path / "up.mp4"), "--upscale", "640x360"]) == 0
    assert (streams(tmp_path / "up.mp4")["video"]["width"], streams(tmp_path / "up.mp4")["video"]["height"]) \
        == (640, 360)
