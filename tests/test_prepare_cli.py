"""`autoencoded prepare` end to end through the real command: bad input gives exit 2 and one stderr line,
and never a dataset.json that claims to be complete."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from autoencoded.training.data import open_dataset

from helpers import Terminal

HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
DECODERS = ["opencv", pytest.param("ffmpeg", marks=pytest.mark.skipif(not HAVE_FFMPEG,
                                                                        reason="ffmpeg/ffprobe not on PATH"))]


def run(*args: str, decoder: str | None = None, preexec=None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if decoder:
        env["AUTOENCODED_DECODER"] = decoder
    return subprocess.run([sys.executable, "-m", "autoencoded", "prepare", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120, preexec_fn=preexec)


def assert_user_error(r: subprocess.CompletedProcess, *words: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def assert_not_complete(folder: Path) -> None:
    meta = folder / "dataset.json"
    assert not meta.exists() or json.loads(meta.read_text())["complete"] is False
    assert not folder.exists() or not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_cli_success_prints_summary(make_video, tmp_path):
    src = make_video("clip.avi", n_frames=12, fourcc="MJPG")
    r = run(src, "-o", tmp_path / "ds", "--size", "64x48")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "12 frames 64x48 kept of 12 decoded" in r.stdout and "x real time" in r.stdout
    assert len(open_dataset(tmp_path / "ds")) == 12


def test_missing_file(tmp_path):
    assert_user_error(run(tmp_path / "nope.mp4", "-o", tmp_path / "ds"), "nope.mp4", "no such file")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("decoder", DECODERS)
def test_text_file_named_mp4(tmp_path, decoder):
    fake = tmp_path / "film.mp4"
    fake.write_text("this is not a video\n" * 50)
    assert_user_error(run(fake, "-o", tmp_path / "ds", decoder=decoder), "film.mp4", "not a readable video")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("decoder", DECODERS)
def test_zero_decodable_frames(make_video, tmp_path, decoder):
    src = make_video("clip.avi", n_frames=24, fourcc="MJPG")
    data = src.read_bytes()
    head = tmp_path / "head.avi"  # the header (declaring 24 frames) and nothing of the first frame
    head.write_bytes(data[:data.find(b"movi") + 104])
    assert_user_error(run(head, "-o", tmp_path / "ds", decoder=decoder), "head.avi", "no decodable frames")
    assert_not_complete(tmp_path / "ds")
    assert not (tmp_path / "ds" / "dataset.json").exists()


@pytest.mark.parametrize("decoder", DECODERS)
def test_truncated_avi_keeps_frames_and_marks_partial(make_video, tmp_path, decoder):
    src = make_video("clip.avi", n_frames=48, fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(src.read_bytes()[:src.stat().st_size // 2])
    line = assert_user_error(run(cut, "-o", tmp_path / "ds", "--size", "64x48", decoder=decoder),
                             "cut.avi", "stopped at frame", "48", "partial")
    k = int(line.split("stopped at frame ")[1].split()[0])
    assert 15 <= k <= 30
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["complete"] is False and meta["frames"] == k and meta["sources"][0]["stopped_at"] == k
    with pytest.raises(Exception, match="partial"):
        open_dataset(tmp_path / "ds")
    assert len(open_dataset(tmp_path / "ds", allow_partial=True)) == k


@pytest.mark.parametrize("decoder", DECODERS)
def test_corrupted_mid_stream_marks_partial(make_video, tmp_path, decoder):
    src = make_video("clip.avi", n_frames=48, fourcc="MJPG")
    data = bytearray(src.read_bytes())
    n = len(data)
    data[n // 3:n // 3 + n // 8] = os.urandom(n // 8)
    bad = tmp_path / "bad.avi"
    bad.write_bytes(bytes(data))
    assert_user_error(run(bad, "-o", tmp_path / "ds", "--size", "64x48", decoder=decoder),
                      "bad.avi", "stopped at frame", "partial")
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["complete"] is False


@pytest.mark.parametrize("decoder", DECODERS)
def test_truncated_mp4_does_not_open(make_video, tmp_path, decoder):
    src = make_video("clip.mp4", n_frames=48)  # OpenCV writes the index (moov) at the end
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(src.read_bytes()[:src.stat().st_size // 2])
    assert_user_error(run(cut, "-o", tmp_path / "ds", decoder=decoder), "cut.mp4", "not a readable video")
    assert not (tmp_path / "ds").exists()


def test_existing_output_needs_overwrite(make_video, tmp_path):
    src = make_video("clip.avi", n_frames=6, fourcc="MJPG")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("mine")
    assert_user_error(run(src, "-o", tmp_path / "ds", "--size", "32x32"), "already exists", "--overwrite")
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["keep.txt"]


def test_unwritable_output(make_video, tmp_path):
    src = make_video("clip.avi", n_frames=6, fourcc="MJPG")
    (tmp_path / "somefile").write_text("x")  # root ignores chmod; a path under a file fails for anyone
    assert_user_error(run(src, "-o", tmp_path / "somefile" / "ds"), "cannot write")
    assert_user_error(run(src, "-o", "/proc/autoencoded-ds"), "cannot write")


@pytest.mark.parametrize("size", ["100x100", "256", "big"])
def test_bad_size(make_video, tmp_path, size):
    src = make_video("clip.avi", n_frames=3, fourcc="MJPG")
    assert_user_error(run(src, "-o", tmp_path / "ds", "--size", size), "--size")
    assert not (tmp_path / "ds").exists()


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (600_000, 600_000))


def test_file_size_limit_leaves_nothing_claiming_complete(make_video, tmp_path):
    src = make_video("clip.avi", n_frames=24, fourcc="MJPG")  # 24 x 110 KB at 256x144 > 600 KB
    assert_user_error(run(src, "-o", tmp_path / "ds", preexec=_limit_file_size), "cannot write", "File too large")
    assert_not_complete(tmp_path / "ds")
    assert not (tmp_path / "ds" / "frames.npy").exists()


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a 1 MB tmpfs here (needs root); the RLIMIT_FSIZE test covers the same path")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_leaves_nothing_claiming_complete(make_video, tmp_path, tiny_disk):
    src = make_video("clip.avi", n_frames=24, fourcc="MJPG")
    assert_user_error(run(src, "-o", tiny_disk / "ds"), "cannot write", "No space left")
    assert_not_complete(tiny_disk / "ds")
    assert list((tiny_disk / "ds").iterdir()) == []


@pytest.mark.parametrize("how", ["ctrl-c in a terminal", "SIGTERM", "SIGHUP"])
def test_stop_signals_remove_the_temp_files(make_video, tmp_path, how, decoder="ffmpeg" if HAVE_FFMPEG else "opencv"):
    """Stopped mid-decode (the decoder child included, for a terminal's Ctrl-C), prepare leaves no hidden
    temp file, exits 130, and the same command then runs without --overwrite."""
    src = make_video("clip.avi", n_frames=300, width=320, height=180, fourcc="MJPG")
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "autoencoded", "prepare", *[str(src)] * 12, "-o", str(out), "--size", "64x48"]
    env = {**os.environ, "AUTOENCODED_DECODER": decoder}
    term = Terminal(cmd, env=env) if how.startswith("ctrl-c") else None
    proc = term.proc if term else subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tmp = out / ".frames.npy.tmp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp.is_file() and tmp.stat().st_size > 100_000):
        time.sleep(0.05)
    assert proc.poll() is None, "prepare ended before it could be stopped"
    if term:
        term.ctrl_c()
        rc, said = term.wait(), term.output
    else:
        proc.send_signal(getattr(signal, how))
        rc, said = proc.wait(60), proc.communicate()[1].decode()
    assert rc == 130, said
    assert "interrupted" in said and "Traceback" not in said
    assert list(out.iterdir()) == []
    again = run(src, "-o", out, "--size", "64x48", decoder=decoder)
    assert again.returncode == 0, again.stderr


# ---- phone video and variable frame rate (issue 13.7) ----------------------------------------------------

needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg makes the test files")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True, capture_output=True, timeout=120)


def frames_of(folder: Path):
    import numpy as np
    return np.load(folder / "frames.npy")


@needs_ffmpeg
@pytest.mark.parametrize("decoder", DECODERS)
def test_phone_video_with_rotation_metadata(make_video, tmp_path, decoder):
    """Stored 320x180 with a 90-degree display matrix, as a phone held upright writes it: the decoders turn
    the picture, so the crop box must be computed on the turned size (it failed in ffmpeg's crop)."""
    import cv2
    import numpy as np

    src = make_video("landscape.mp4", n_frames=24, width=320, height=180)
    phone = tmp_path / "phone.mp4"
    ffmpeg("-i", src, "-c", "copy", "-metadata:s:v:0", "rotate=90", phone)
    r = run(phone, "-o", tmp_path / "ds", "--size", "144x256", decoder=decoder)
    assert r.returncode == 0, r.stderr
    got = frames_of(tmp_path / "ds")
    assert got.shape == (24, 256, 144, 3)
    # the picture is the source turned a quarter, not the source squeezed into a portrait box
    first = cv2.cvtColor(cv2.VideoCapture(str(src)).read()[1], cv2.COLOR_BGR2RGB)
    turned = [cv2.resize(cv2.rotate(first, k), (144, 256), interpolation=cv2.INTER_AREA)
              for k in (cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_90_COUNTERCLOCKWISE)]
    squeezed = cv2.resize(first, (144, 256), interpolation=cv2.INTER_AREA)
    err = [float(np.abs(got[0].astype(int) - t).mean()) for t in turned]
    assert min(err) < 12 < float(np.abs(got[0].astype(int) - squeezed).mean()), err


def make_vfr(tmp_path: Path) -> Path:
    """A healthy Matroska file whose frame rate changes: 60 frames at 30 fps, then 20 at 10 fps. Matroska
    declares no frame count, and duration x 30 fps estimates 118 frames for its 80."""
    vfr = tmp_path / "vfr.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x180:rate=30", "-frames:v", "80", "-vf",
           "setpts='if(lt(N,60),N/(30*TB),2/TB+(N-60)/(10*TB))'", "-vsync", "vfr", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", vfr)
    return vfr


@needs_ffmpeg
@pytest.mark.parametrize("decoder", DECODERS)
def test_variable_frame_rate_file_is_not_called_damaged_against_an_estimate(tmp_path, decoder):
    vfr = make_vfr(tmp_path)
    r = run(vfr, "-o", tmp_path / "ds", "--size", "64x48", decoder=decoder)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["complete"] is True and meta["frames"] == 80 and meta["sources"][0]["stopped_at"] is None


@needs_ffmpeg
@pytest.mark.parametrize("decoder", DECODERS)
def test_truncated_variable_frame_rate_file_is_still_partial(tmp_path, decoder):
    vfr = make_vfr(tmp_path)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(vfr.read_bytes()[: vfr.stat().st_size // 2])
    line = assert_user_error(run(cut, "-o", tmp_path / "ds", "--size", "64x48", decoder=decoder),
                             "cut.mkv", "stopped at frame", "of about 118", "partial")
    assert "ended at" in line or "ended prematurely" in line
