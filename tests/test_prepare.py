"""autoencoded prepare, in process: real videos written with OpenCV, decoded by both decoders, read back."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from autoencoded.errors import UserError
from autoencoded.media import framing
from autoencoded.media.probe import VideoInfo
from autoencoded.sizes import parse_size
from autoencoded.training.data import open_dataset
from autoencoded.training.prepare import npy_header, prepare

from helpers import synthetic_frame

HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
DECODERS = ["opencv", pytest.param("ffmpeg", marks=pytest.mark.skipif(not HAVE_FFMPEG,
                                                                        reason="ffmpeg/ffprobe not on PATH"))]


@pytest.fixture(params=DECODERS)
def decoder(request, monkeypatch):
    monkeypatch.setenv("AUTOENCODED_DECODER", request.param)
    return request.param


def letterboxed(i: int, width: int, height: int) -> np.ndarray:
    """A 2.39:1 picture inside black bars; every other frame is a dark scene (picture below the bar level)."""
    img = np.zeros((height, width, 3), np.uint8)
    ph = int(round(width / 2.39))
    y0 = (height - ph) // 2
    level = 200 if i % 2 == 0 else 12
    yy, xx = np.mgrid[0:ph, 0:width]
    img[y0:y0 + ph] = (level * (0.5 + 0.5 * np.sin((xx + yy + i) / 9.0)))[..., None].astype(np.uint8)
    img[y0:y0 + ph, :, 0] = level
    return img


def test_writes_a_dataset_that_matches_the_video(make_video, tmp_path, decoder):
    src = make_video("clip.avi", n_frames=24, width=320, height=180, fourcc="MJPG")
    meta, summary = prepare([src], tmp_path / "ds", size=(64, 48), crop="center")
    ds = open_dataset(tmp_path / "ds")
    assert (len(ds), ds.width, ds.height, ds.complete) == (24, 64, 48, True)
    assert meta == ds.meta and meta["frames"] == 24 and meta["crop"] == "center"
    s = meta["sources"][0]
    assert (s["frames_decoded"], s["frames_kept"], s["stopped_at"], s["error"]) == (24, 24, None, None)
    assert s["fps"] == pytest.approx(24.0) and s["duration_s"] == pytest.approx(1.0)
    # 320x180 (16:9) -> 4:3 centre crop: 240x180 from x=40
    assert s["crop_box"] == [40, 0, 240, 180]
    assert summary.kept == 24 and summary.bytes == (tmp_path / "ds" / "frames.npy").stat().st_size
    # frame content: the same crop and resize done by hand on OpenCV's decode (codec and YUV rounding aside)
    cap = cv2.VideoCapture(str(src))
    for i in range(24):
        ok, bgr = cap.read()
        assert ok
        want = cv2.cvtColor(framing.resize(bgr[:, 40:280], 64, 48), cv2.COLOR_BGR2RGB)
        assert np.abs(ds[i].astype(int) - want.astype(int)).mean() < 6, i
    cap.release()


def test_every_max_frames_and_concatenation(make_video, tmp_path, decoder):
    a = make_video("a.avi", n_frames=12, fourcc="MJPG")
    b = make_video("b.avi", n_frames=12, fourcc="MJPG", frame_fn=lambda i, w, h: np.full((h, w, 3), 255, np.uint8))
    meta, summary = prepare([a, b], tmp_path / "ds", size=(64, 48), every=3)
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 8 and [s["frames_kept"] for s in meta["sources"]] == [4, 4]
    assert summary.dropped_every == 16 and meta["every"] == 3
    assert ds.batch(range(4)).mean() < 200 and ds.batch(range(4, 8)).min() > 240  # in order: a, then b
    meta, _ = prepare([a, b], tmp_path / "ds2", size=(64, 48), max_frames=5)
    assert meta["frames"] == 5 and meta["complete"] is True and len(meta["sources"]) == 1


def test_dedupe_drops_static_runs(make_video, tmp_path, decoder):
    src = make_video("static.avi", n_frames=24, fourcc="MJPG",
                     frame_fn=lambda i, w, h: synthetic_frame(i // 4 * 9, w, h))  # 6 shots of 4 equal frames
    meta, summary = prepare([src], tmp_path / "ds", size=(64, 48), dedupe=2.0)
    assert meta["frames"] == 6 and summary.dropped_dedupe == 18 and meta["dedupe"] == 2.0
    assert meta["sources"][0]["frames_dropped_dedupe"] == 18


def test_auto_crop_removes_letterbox_even_in_dark_scenes(make_video, tmp_path, decoder):
    src = make_video("scope.avi", n_frames=36, width=320, height=180, fourcc="MJPG", frame_fn=letterboxed)
    meta, _ = prepare([src], tmp_path / "auto", size=(64, 32), crop="auto")
    x, y, w, h = meta["sources"][0]["crop_box"]
    # picture rows 23..156, and the row either side that MJPEG's ringing lights (not black, so kept)
    assert 22 <= y <= 26 and 128 <= h <= 136
    assert w / h == pytest.approx(2.0, abs=0.03)  # then the centre at the 64x32 aspect
    bright = open_dataset(tmp_path / "auto")[0]  # frame 0 is a bright one: no black rows left
    assert bright[0].mean() > 40 and bright[-1].mean() > 40
    meta, _ = prepare([src], tmp_path / "center", size=(64, 32), crop="center")
    assert meta["sources"][0]["crop_box"] == [0, 10, 320, 160]
    assert open_dataset(tmp_path / "center")[0][0].mean() < 5  # the bars are still there
    meta, _ = prepare([src], tmp_path / "fit", size=(64, 48), crop="fit")
    fit = open_dataset(tmp_path / "fit")[0]
    assert meta["sources"][0]["crop_box"] == [0, 0, 320, 180] and fit[:5].max() < 8 and fit[24].mean() > 40
    meta, _ = prepare([src], tmp_path / "none", size=(64, 48), crop="none")
    assert meta["sources"][0]["crop_box"] == [0, 0, 320, 180] and len(open_dataset(tmp_path / "none")) == 36


def test_detect_bars_on_samples():
    pic = np.full((90, 160, 3), 120, np.uint8)
    boxed = pic.copy()
    boxed[:12] = boxed[-12:] = 0
    dark = boxed // 12  # a dark scene: picture below the bar level, bars still black
    assert framing.detect_bars([dark, boxed, dark], (320, 180)) == (0, 24, 320, 132)
    assert framing.detect_bars([dark, dark]) is None  # nothing bright to judge by: crop nothing
    assert framing.detect_bars([pic]) is None
    pillar = pic.copy()
    pillar[:, :20] = pillar[:, -20:] = 0
    assert framing.detect_bars([pillar]) == (20, 0, 120, 90)


def test_crop_box_honours_pixel_aspect():
    # anamorphic 720x576 PAL with SAR 64/45 shows as 1024x576 (16:9): the centre crop for 16:9 is all of it
    info = VideoInfo(path=None, width=720, height=576, fps=25.0, expected_frames=10, duration_s=0.4,
                           sar=64 / 45)
    assert framing.frame_for(720, 576, info.sar, "center", 256, 144).box == (0, 0, 720, 576)
    x, y, w, h = framing.frame_for(720, 576, info.sar, "center", 64, 48).box  # 4:3 -> narrower in stored pixels
    assert w * info.sar / h == pytest.approx(4 / 3, abs=0.01) and x == (720 - w) // 2 // 2 * 2


def test_npy_header_holds_any_film_and_numpy_reads_it(tmp_path):
    for shape in [(1, 16, 16, 3), (10**9, 4320, 7680, 3)]:
        head = npy_header(shape)
        assert len(head) == 128
        path = tmp_path / "h.npy"
        path.write_bytes(head)
        with open(path, "rb") as f:
            assert np.lib.format.read_magic(f) == (1, 0)
            assert np.lib.format.read_array_header_1_0(f) == (shape, False, np.dtype(np.uint8))


@pytest.mark.parametrize("text", ["256x144", "64X48", " 1920x1072 "])
def test_parse_size_ok(text):
    w, h = parse_size(text, multiple=16)
    assert w % 16 == 0 and h % 16 == 0


@pytest.mark.parametrize("text", ["256x145", "256", "axb", "0x16", "-16x16", "16x16x16"])
def test_parse_size_bad(text):
    with pytest.raises(UserError, match="--size"):
        parse_size(text, multiple=16)


def test_overwrite_replaces_and_keeps_old_on_refusal(make_video, tmp_path):
    a = make_video("a.avi", n_frames=6, fourcc="MJPG")
    b = make_video("b.avi", n_frames=9, fourcc="MJPG")
    prepare([a], tmp_path / "ds", size=(32, 32))
    with pytest.raises(UserError, match="--overwrite"):
        prepare([b], tmp_path / "ds", size=(32, 32))
    assert len(open_dataset(tmp_path / "ds")) == 6
    prepare([b], tmp_path / "ds", size=(32, 32), overwrite=True)
    assert len(open_dataset(tmp_path / "ds")) == 9
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["dataset.json", "frames.npy"]
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["sources"][0]["path"].endswith("b.avi")
