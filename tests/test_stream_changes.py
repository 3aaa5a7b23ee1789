"""Streams that do not hold still (issue 34, item 7): a variable-frame-rate film keeps real time through
`render` (each frame held until the next one's time, not written at a nominal rate), and a stream whose
picture changes size part-way is framed anew from that frame by `render`, `prepare` and `memory`, which
read the whole of it. Real clips made by ffmpeg, real outputs read back (ffprobe, decoded frames)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from autoencoded.live import assets
from autoencoded.media.decode import Pictures
from autoencoded.media.tools import have_ffmpeg
from autoencoded.training.data import open_dataset

from helpers import cli, read_video, streams

pytestmark = pytest.mark.skipif(not have_ffmpeg(), reason="ffmpeg/ffprobe are not installed")

# 26 frames: 13 at 25 fps, then 13 held 4 to 5 frame times each (0.16-0.2 s): 2.72 s in all (issue 34's
# clip). In ticks of 1/25 s, the time base of frames piped in at 25 fps
TICKS = [*range(13), *(12 + round(k * 4.23) for k in range(1, 14))]
TIMES = [t / 25 for t in TICKS]
LEVEL = [16 + 8 * k for k in range(26)]  # frame k is grey at LEVEL[k], so a frame read back says which it is


def encode(path: Path, frames: list[np.ndarray], *extra: str, vf: str | None = None) -> Path:
    h, w = frames[0].shape[:2]
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                    "-framerate", "25", "-i", "-", *(["-vf", vf] if vf else []), "-c:v", "libx264", "-crf", "12",
                    "-pix_fmt", "yuv420p", *extra, f"file:{path}"],
                   input=b"".join(f.tobytes() for f in frames), check=True)
    return path


def vfr_clip(path: Path) -> Path:
    frames = [np.full((180, 320, 3), v, np.uint8) for v in LEVEL]
    ticks = "+".join(f"eq(N,{k})*{t}" for k, t in enumerate(TICKS))
    return encode(path, frames, "-fps_mode", "vfr", vf=f"setpts='{ticks}'")


@pytest.fixture(scope="module")
def two_shapes(tmp_path_factory) -> Path:
    """A transport stream: 25 frames of a red 640x360 picture, then 25 of a blue 270x480 (portrait) one,
    one second each, cut together as broadcast streams are (the second segment's own SPS at a keyframe)."""
    root = tmp_path_factory.mktemp("shapes")
    red = np.zeros((360, 640, 3), np.uint8)
    red[..., 0] = 220
    blue = np.zeros((480, 270, 3), np.uint8)
    blue[..., 2] = 220
    a = encode(root / "a.ts", [red] * 25, "-bf", "0")  # no B-frames: the second segment starts 1 s after
    b = encode(root / "b.ts", [blue] * 25, "-bf", "0", "-output_ts_offset", "1")
    clip = root / "two.ts"
    clip.write_bytes(a.read_bytes() + b.read_bytes())
    return clip


def test_the_test_clips_are_what_they_say(tmp_path, two_shapes):
    """ffmpeg delivers the clips as made: uneven times, and two picture sizes."""
    pics = list(Pictures(vfr_clip(tmp_path / "vfr.mkv")))
    assert [round(p.time_s, 2) for p in pics] == [round(t, 2) for t in TIMES]
    sizes = [p.rgb.shape[:2] for p in Pictures(two_shapes)]
    assert sizes == [(360, 640)] * 25 + [(480, 270)] * 25


@pytest.mark.parametrize("container", ["mkv", "mp4"])
def test_render_keeps_real_time_for_a_variable_frame_rate(tmp_path, capsys, container):
    clip = vfr_clip(tmp_path / f"vfr.{container}")
    out = tmp_path / "out.mp4"
    assert cli("render", clip, out, "--side-by-side") == 0
    said = capsys.readouterr().out
    slots = TICKS[-1] + 1  # 68 frames at 25 fps: the last frame shown for one frame time
    assert "uneven times" in said and f"26 frames as {slots}" in said, said
    v = streams(out)["video"]
    assert v["r_frame_rate"] == "25/1" and int(v["nb_read_frames"]) == slots
    assert float(v["duration"]) == pytest.approx(2.72, abs=0.05)  # the clip's 2.72 s, not 26 / 25 = 1.04 s
    frames = read_video(out)
    shown = [int(np.argmin([abs(f[:, :f.shape[1] // 2].mean() - v) for v in LEVEL])) for f in frames]
    # frame k of the output (at k / 25 s) shows the last input frame whose time has come
    want = [max(i for i, t in enumerate(TICKS) if t <= k) for k in range(slots)]
    assert shown == want


def _pane(frame: np.ndarray) -> tuple[int, np.ndarray]:
    """The left pane of a side-by-side frame: how many columns are lit, and its mean colour."""
    pane = frame[:, :frame.shape[1] // 2].astype(int)
    lit = pane.max(axis=2) > 40
    return int(lit.any(axis=0).sum()), pane[lit].mean(axis=0)


def test_render_frames_a_stream_anew_where_its_picture_changes_size(tmp_path, capsys, two_shapes):
    out = tmp_path / "out.mp4"
    assert cli("render", two_shapes, out, "--side-by-side") == 0
    said = capsys.readouterr().out
    assert "from frame 25 (1.00 s) the picture changes size: 270x480 (9:16)" in said, said
    v = streams(out)["video"]
    assert int(v["nb_read_frames"]) == 50
    frames = read_video(out)
    pane_w, pane_h = frames[0].shape[1] // 2, frames[0].shape[0]
    for k in (0, 24):  # the landscape picture fills its 16:9 pane
        cols, colour = _pane(frames[k])
        assert cols == pane_w and colour[0] > 150 > colour[2]
    for k in (26, 49):  # the portrait one is shown whole at its own shape (fitted), not stretched to 16:9
        cols, colour = _pane(frames[k])
        assert abs(cols - pane_h * 270 / 480) <= 4, cols
        assert colour[2] > 150 > colour[0]


def test_prepare_reads_and_frames_both_segments(tmp_path, capsys, two_shapes):
    assert cli("prepare", two_shapes, "-o", tmp_path / "ds", "--size", "64x32") == 0
    assert "two.ts: the picture changes size from frame 25 (1.00 s) 270x480" in capsys.readouterr().out
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 50 and ds.complete
    assert ds[10][..., 0].mean() > 150 > ds[10][..., 2].mean()  # red, the whole frame
    portrait = ds[40]
    assert portrait[..., 2].mean() > 150 > portrait[..., 0].mean()  # blue, the centre of the portrait: no bars
    assert portrait.max(axis=2).min() > 150


def test_memory_remembers_the_whole_stream_and_says_it_changes_size(tmp_path, capsys, two_shapes):
    pack = tmp_path / "pack"
    shutil.copytree(assets.DEMO_MODEL_DIR, pack)
    assert cli("memory", pack, two_shapes, "--overwrite") == 0
    said = capsys.readouterr().out
    assert "changes size from frame 25" in said and "of 50 frames kept" in said, said
    record = json.loads((pack / "model.json").read_text())["memory"]
    assert record["source"]["frames"] == 50
