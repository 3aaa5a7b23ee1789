"""Sinks: real video files written and read back, the real pyvirtualcam error path, the window's guard."""

from __future__ import annotations

import re
import sys
import time

import numpy as np
import pytest

from autoencoded.errors import UserError
from autoencoded.live.io.sinks import (
    NullSink,
    RecorderSink,
    VirtualCamSink,
    WindowSink,
    open_sink,
    vcam_help,
)
from autoencoded.media.tools import ffmpeg_path
from autoencoded.media.writers import open_video_writer

from helpers import read_video, streams


def frames(n: int, w: int = 64, h: int = 48) -> list[np.ndarray]:
    return [np.full((h, w, 3), (i * 20) % 256, np.uint8) for i in range(n)]


needs_ffmpeg = pytest.mark.skipif(ffmpeg_path() is None, reason="ffmpeg is not installed")


@needs_ffmpeg
@pytest.mark.parametrize("name, codec", [("rec.mp4", "h264"), ("rec.mkv", "h264"), ("rec.avi", "mjpeg")])
def test_recorder_writes_partial_then_renames(tmp_path, name, codec):
    out = tmp_path / name
    rec = RecorderSink(out, log=lambda m: None)
    rec.open(64, 48, 25)
    shown = []
    for f in frames(12):  # shown at about 12.5 fps: each frame is on screen for about two of the file's slots
        shown.append(time.perf_counter())
        rec.write(f)
        time.sleep(0.08)
    assert not out.exists(), "nothing at the target name until the file is complete"
    partial = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and partial[0].name.startswith(f".{name}.")
    rec.close()
    assert out.is_file() and not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    v = streams(out)["video"]
    assert (v["codec_name"], v["width"], v["height"], v["r_frame_rate"]) == (codec, 64, 48, "25/1")
    # real time: the file lasts from the first frame shown through the last one's slot, at 25 fps
    assert abs(int(v["nb_read_frames"]) - (int((shown[-1] - shown[0]) * 25) + 1)) <= 1
    levels = [round(g.mean() / 20) for g in read_video(out)]  # which of the 12 frames each slot shows
    assert levels == sorted(levels) and set(levels) == set(range(12)), levels  # all of them, in order, held
    rec.close()  # twice is fine


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 255, 255),
           (0, 0, 0), (128, 128, 128), (200, 120, 40), (30, 90, 160), (16, 235, 128)]


def colour_blocks(w: int, h: int) -> np.ndarray:
    """12 flat blocks of the colours above, 4 across, 3 down (the last row and column take what is left)."""
    img = np.zeros((h, w, 3), np.uint8)
    bw, bh = w // 4, h // 3
    for i, c in enumerate(COLOURS):
        img[(i // 4) * bh:(i // 4 + 1) * bh if i // 4 < 2 else h, (i % 4) * bw:(i % 4 + 1) * bw if i % 4 < 3 else w] = c
    return img


@needs_ffmpeg
@pytest.mark.parametrize("name, w, h", [("even.mp4", 128, 96), ("odd.mp4", 127, 95), ("even.avi", 128, 96)])
def test_recorded_colours_survive_the_pipe_to_the_encoder(tmp_path, name, w, h):
    """Even-sized H.264 frames reach ffmpeg as I420 converted here, the others as RGB: the colours read back
    are the ones written either way (within 4:2:0 and CRF 18's loss), no channel swapped, no range shifted."""
    img = colour_blocks(w, h)
    writer = open_video_writer(tmp_path / name, w, h, 25)
    for _ in range(3):
        writer.write(img)
    writer.close()
    back = read_video(tmp_path / name)
    assert len(back) == 3 and back[0].shape == (h + h % 2, w + w % 2, 3)  # odd sides padded by one
    bw, bh = w // 4, h // 3
    for i, c in enumerate(COLOURS):
        y, x = (i // 4) * bh + bh // 2, (i % 4) * bw + bw // 2
        got = back[1][y - 3:y + 4, x - 3:x + 4].reshape(-1, 3).mean(axis=0)
        assert np.abs(got - np.array(c)).max() <= 6, (c, got.round(1))


@needs_ffmpeg
def test_recorder_with_no_frames_leaves_nothing(tmp_path):
    logs = []
    rec = RecorderSink(tmp_path / "empty.mp4", log=logs.append)
    rec.open(32, 32, 30)
    rec.close()
    assert list(tmp_path.iterdir()) == [] and "no frames" in logs[0]


@needs_ffmpeg
def test_writer_abort_removes_partial_and_rejects_wrong_frames(tmp_path):
    w = open_video_writer(tmp_path / "a.mp4", 64, 48, 30)
    w.write(frames(1)[0])
    with pytest.raises(ValueError, match="does not match"):
        w.write(np.zeros((10, 10, 3), np.uint8))
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_opencv_writer_when_ffmpeg_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # a PATH without ffmpeg
    out = tmp_path / "cv.mp4"
    w = open_video_writer(out, 64, 48, 24)
    assert w.backend == "opencv mp4v"
    for f in frames(9):
        w.write(f)
    w.close()
    assert len(read_video(out)) == 9 and [p.name for p in tmp_path.iterdir()] == ["cv.mp4"]


def test_output_path_checks(tmp_path):
    with pytest.raises(UserError, match="unsupported video file type"):
        open_sink(str(tmp_path / "x.gif"))
    with pytest.raises(UserError, match="no such folder"):
        open_sink(str(tmp_path / "nope" / "x.mp4"))
    (tmp_path / "taken.mp4").mkdir()
    with pytest.raises(UserError, match="is a folder, expected a file name"):
        open_sink(str(tmp_path / "taken.mp4"))
    with pytest.raises(UserError, match="expected vcam, window, null, ndi"):
        open_sink("speakers")
    assert isinstance(open_sink("null"), NullSink)
    assert isinstance(open_sink("window"), WindowSink)
    assert isinstance(open_sink("vcam"), VirtualCamSink)
    assert open_sink("vcam:/dev/video9").device == "/dev/video9"


def _loopback_present() -> bool:
    import glob
    return any(open(p).read().strip().lower().startswith(("dummy", "autoencoded", "v4l2 loopback"))
               for p in glob.glob("/sys/class/video4linux/*/name"))


@pytest.mark.skipif(not sys.platform.startswith("linux") or _loopback_present(),
                    reason="needs Linux without a v4l2loopback device (the real no-device path)")
def test_vcam_without_device_says_what_to_do():
    pytest.importorskip("pyvirtualcam")
    sink = VirtualCamSink(log=lambda m: None)
    with pytest.raises(UserError) as err:
        sink.open(64, 48, 30)
    msg = str(err.value)
    assert "\n" not in msg and "no virtual camera" in msg
    assert "modprobe v4l2loopback" in msg and "exclusive_caps=1" in msg
    sink.close()


def test_vcam_without_pyvirtualcam(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # what `import pyvirtualcam` sees when absent
    with pytest.raises(UserError, match=r"pip install 'autoencoded\[vcam\]'"):
        VirtualCamSink(log=lambda m: None).open(64, 48, 30)


def test_vcam_help_per_os():
    assert "modprobe v4l2loopback" in vcam_help("linux")
    assert "OBS" in vcam_help("win32") and "Start Virtual Camera" in vcam_help("win32")
    assert "OBS" in vcam_help("darwin") and "system extension" in vcam_help("darwin")


def test_window_needs_a_display(monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("the display check applies to Linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(UserError, match="no display"):
        WindowSink().open(64, 48, 30)


@pytest.mark.parametrize("kind, platform, os_name", [("spout", "win32", "Windows"), ("syphon", "darwin", "macOS")])
def test_texture_sharing_on_another_os_is_one_line(kind, platform, os_name, monkeypatch):
    sink = open_sink(f"{kind}:Stage")
    assert sink.share_name == "Stage" and open_sink(kind).share_name == "autoencoded"
    if sys.platform.startswith(platform[:3]):
        pytest.skip(f"this is {os_name}")
    with pytest.raises(UserError) as err:
        sink.open(64, 48, 30)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{kind.capitalize()} exists only on {os_name};")
    assert "--output ndi" in msg


@pytest.mark.parametrize("kind, platform, module, extra", [("spout", "win32", "SpoutGL", "spout"),
                                                           ("syphon", "darwin", "syphon", "syphon")])
def test_texture_sharing_without_its_library_says_how_to_install(kind, platform, module, extra, monkeypatch):
    monkeypatch.setattr(sys, "platform", platform)  # the OS where it exists, without the library
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(UserError, match=rf"^{kind.capitalize()} needs {module}: pip install 'autoencoded\[{extra}\]'$"):
        open_sink(kind).open(64, 48, 30)


@pytest.mark.parametrize("kind, module", [
    pytest.param("spout", "SpoutGL", marks=pytest.mark.skipif(sys.platform != "win32", reason="Spout is Windows only")),
    pytest.param("syphon", "syphon", marks=pytest.mark.skipif(sys.platform != "darwin", reason="Syphon is macOS only")),
])
def test_texture_sharing_publishes_frames(kind, module):
    pytest.importorskip(module)
    sink = open_sink(f"{kind}:autoencoded-test")
    sink.open(64, 48, 30)
    try:
        for f in frames(3):
            sink.write(f)
    finally:
        sink.close()


@needs_ffmpeg
def test_live_recording_uses_the_fast_x264_preset_and_render_the_careful_one(tmp_path):
    """x264 writes its settings into the stream: ultrafast has no CABAC, veryfast has."""
    rec = RecorderSink(tmp_path / "live.mp4", log=lambda m: None)
    rec.open(64, 48, 25)
    for f in frames(5):
        rec.write(f)
    rec.close()
    w = open_video_writer(tmp_path / "render.mp4", 64, 48, 25)
    for f in frames(5):
        w.write(f)
    w.close()
    assert b"cabac=0" in (tmp_path / "live.mp4").read_bytes()
    assert b"cabac=1" in (tmp_path / "render.mp4").read_bytes()


# ---- a recording's summary adds up; without ffmpeg it says so (issue 23) ------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_recordings_counts_add_up(tmp_path):
    """Before: '1754 frames at 30 fps: 1483 shown, 292 repeats' (the shown frames that came and went within one
    slot were counted as shown but are not in the file)."""
    from autoencoded.live.io.realtime import RealTimeWriter
    from autoencoded.live.io.sinks import recording_counts

    clock = FakeClock()
    r = RealTimeWriter(open_video_writer(tmp_path / "r.mp4", 64, 48, 10.0), 10.0, clock=clock)
    for t in (0.0, 0.01, 0.02, 0.35, 0.36, 0.9):  # two within slot 0, one within slot 3; long stays between
        clock.t = t
        r.write(np.full((48, 64, 3), int(t * 200), np.uint8))
    r.close()
    text = recording_counts(r)
    slots, kept, repeats = map(int, re.match(r"(\d+) frames at 10 fps = (\d+) new \+ (\d+) repeats", text).groups())
    assert slots == kept + repeats == r.slots
    assert f"of the {r.shown} frames shown, {r.shown - kept} came and went within one frame's slot" in text, text
    assert int(streams(tmp_path / "r.mp4")["video"]["nb_read_frames"]) == slots


def test_live_without_ffmpeg_says_it_records_through_opencv(tmp_path, make_video, monkeypatch, capsys):
    from autoencoded.cli import main

    clip = make_video("in.mp4", n_frames=20, width=160, height=96)
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg, no ffprobe
    assert ffmpeg_path() is None
    out = tmp_path / "live.mp4"
    rc = main(["live", "--input", str(clip), "--output", str(out), "--max-frames", "10", "--osc-port", "0",
               "--web", "0", "--size", "96x72"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"ffmpeg not found: recording {out} as mp4v through OpenCV" in err, err
    assert out.is_file()
