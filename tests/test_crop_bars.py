"""--crop auto trims only black bars: real film frames (the demo clip) made dark at an edge, encoded to H.264
and read back through the real samplers. Dim picture (a dark top 40%, a dark coat at the left edge with a
lit highlight) is kept; real letterbox bars are still trimmed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from autoencoded.live import assets
from autoencoded.media.framing import for_video
from autoencoded.media.probe import probe
from autoencoded.media.tools import have_ffmpeg

from helpers import read_video

pytestmark = pytest.mark.skipif(not have_ffmpeg(), reason="ffmpeg/ffprobe are not installed")

W, H = 640, 360  # the demo clip's size


def encode(path: Path, frames: list[np.ndarray]) -> Path:
    h, w = frames[0].shape[:2]
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                    "-framerate", "25", "-i", "-", "-c:v", "libx264", "-crf", "18", "-g", "10", "-pix_fmt", "yuv420p",
                    f"file:{path}"], input=b"".join(f.tobytes() for f in frames), check=True)
    return path


@pytest.fixture(scope="module")
def film() -> list[np.ndarray]:
    frames = read_video(assets.DEMO_CLIP, limit=60)[::2]  # 30 real frames, a few keyframes apart when encoded
    assert frames[0].shape == (H, W, 3)
    return frames


def dim_top(frame: np.ndarray) -> np.ndarray:
    """The top 40% as a dim sky: its shadows sunk to black, its lights at 30% (every row's mean below 20,
    which a mean-based bar test takes for a bar; every row's brightest pixel over 70 in some frame)."""
    out = frame.copy()
    top = out[:int(H * 0.4)] / 255.0
    out[:int(H * 0.4)] = (top ** 4 * 255 * 0.3).astype(np.uint8)
    return out


def dark_coat(frame: np.ndarray) -> np.ndarray:
    """70 columns at the left edge nearly black (a dark coat) but for a lit seam crossing every one of them
    at 250: the columns' mean is a bar's, their brightest pixel is picture."""
    out = frame.copy()
    out[:, :70] = (out[:, :70] * 0.04).astype(np.uint8)
    for x in range(70):
        out[100 + x, x] = 250
    return out


def letterbox(frame: np.ndarray) -> np.ndarray:
    """The picture squeezed into 640x264 between real black bars of 48 rows above and below."""
    import cv2

    out = np.zeros_like(frame)
    out[48:312] = cv2.resize(frame, (W, 264), interpolation=cv2.INTER_AREA)
    return out


@pytest.mark.parametrize("decoder", ["ffmpeg", "opencv"])
@pytest.mark.parametrize("darken", [dim_top, dark_coat], ids=["dim top 40%", "dark coat at the edge"])
def test_dark_picture_is_not_a_bar(film, tmp_path, darken, decoder):
    frames = [darken(f) for f in film]
    edge = [f[:int(H * 0.4)] for f in frames] if darken is dim_top else [f[:, :70].transpose(1, 0, 2) for f in frames]
    # what makes it hard: by its mean each row (column) of the dark edge is as dark as a bar in every frame
    assert np.max([e.mean(axis=(1, 2)) for e in edge]) < 20
    clip = encode(tmp_path / "dark.mp4", frames)
    info = probe(clip)
    f = for_video(info, "auto", 256, 144, crop_limit=1.0, decoder=decoder)
    assert f.bars is None, f.describe()
    assert f.box == (0, 0, W, H), f.describe()  # 16:9 into 16:9: nothing cut


@pytest.mark.parametrize("decoder", ["ffmpeg", "opencv"])
def test_real_letterbox_is_still_trimmed(film, tmp_path, decoder):
    clip = encode(tmp_path / "scope.mp4", [letterbox(f) for f in film])
    f = for_video(probe(clip), "auto", 256, 144, crop_limit=1.0, decoder=decoder)
    assert f.bars is not None, f.describe()
    x, y, w, h = f.bars
    # the bars are gone to within the codec's blurred boundary rows; the picture's own rows are all kept
    assert x == 0 and w == W and 46 <= y <= 50 and 262 <= h <= 266, f.bars
    assert "black bars trimmed to 640x" in f.describe()


@pytest.mark.parametrize("darken", [dim_top, dark_coat], ids=["dim top 40%", "dark coat at the edge"])
def test_dark_letterboxed_picture_keeps_its_dark_edge(film, tmp_path, darken):
    """Bars around a picture that is itself dark at an edge: the bars go, the dark picture stays."""
    clip = encode(tmp_path / "both.mp4", [letterbox(darken(f)) for f in film])
    x, y, w, h = for_video(probe(clip), "auto", 256, 144, crop_limit=1.0).bars
    assert x == 0 and w == W and 46 <= y <= 50 and 262 <= h <= 266, (x, y, w, h)
