"""Offline render: real videos with real audio in, real files out, checked with ffprobe and OpenCV."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from autoencoded.cli import main
from autoencoded.errors import UserError
from autoencoded.live import assets, render
from autoencoded.live.engines import open_engine
from autoencoded.live.engines.frames import fit, upscale
from autoencoded.media.probe import probe
from autoencoded.media.tools import ffmpeg_path
from autoencoded.sizes import parse_size

from helpers import kick_track, read_video, streams, synthetic_frame, tiny_checkpoint, write_video, write_wav

W, H = 64, 48
pytestmark = pytest.mark.skipif(ffmpeg_path() is None, reason="ffmpeg is not installed")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("render") / "tiny.safetensors", W, H, seed=1)


@pytest.fixture
def engine(ckpt):
    e = open_engine(ckpt, backend="torch", log=lambda m: None)
    yield e
    e.close()


def with_audio(video, out, codec: str = "aac", seconds: float = 1.5):
    """Mux a real sine tone (ffmpeg lavfi) under `video`."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-f", "lavfi", "-i",
                    f"sine=frequency=440:duration={seconds}", "-map", "0:v", "-map", "1:a", "-c:v", "copy",
                    "-c:a", codec, str(out)], check=True)
    return out


def audio_seconds(path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                          "stream=duration:stream_tags=DURATION", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    st = json.loads(out)["streams"][0]
    if "duration" in st:
        return float(st["duration"])
    h, m, sec = st["tags"]["DURATION"].split(":")  # Matroska keeps it as a tag
    return int(h) * 3600 + int(m) * 60 + float(sec)


@pytest.mark.parametrize("container, acodec, out_acodec", [(".mp4", "aac", "aac"), (".mkv", "pcm_s16le", "aac")])
def test_render_keeps_frame_count_rate_and_audio(make_video, tmp_path, engine, container, acodec, out_acodec):
    video = make_video("v.mp4", n_frames=36, width=128, height=80, fps=24000 / 1001)
    src = with_audio(video, tmp_path / f"in{container}", acodec, seconds=2.0)  # longer than the video
    out = tmp_path / "out.mp4"
    s = render.render(src, out, engine, batch=5, progress=False, log=lambda m: None)
    assert s["frames"] == 36 and s["audio"] and s["faults"] == 0
    si, so = streams(src), streams(out)
    assert int(so["video"]["nb_read_frames"]) == int(si["video"]["nb_read_frames"]) == 36
    assert so["video"]["r_frame_rate"] == si["video"]["r_frame_rate"]
    assert (so["video"]["width"], so["video"]["height"]) == (W, H)
    assert so["audio"]["codec_name"] == out_acodec
    assert audio_seconds(out) == pytest.approx(audio_seconds(src), abs=0.05) and audio_seconds(src) > 1.9
    # the pictures are the model's reconstructions, in order
    inp, got = read_video(src), read_video(out)
    want = engine.reconstruct(np.stack([fit(f, W, H) for f in inp]))
    for i in (0, 17, 35):
        assert np.abs(got[i].astype(np.int16) - want[i]).mean() < 4, f"frame {i}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_side_by_side_and_upscale(make_video, tmp_path, engine):
    src = make_video("v.mp4", n_frames=10, width=160, height=120, fps=25.0)
    out = tmp_path / "sbs.mkv"
    s = render.render(src, out, engine, side_by_side=True, size=(256, 96), noise=0.5, seed=3, progress=False,
                      log=lambda m: None)  # the whole frame: two 128x96 pictures
    v = streams(out)["video"]
    assert (v["width"], v["height"], int(v["nb_read_frames"])) == (256, 96, 10) and "audio" not in streams(out)
    assert s["audio"] is False
    first_in, first_out = read_video(src)[0], read_video(out)[0]
    left, right = first_out[:, :128].astype(np.int16), first_out[:, 128:].astype(np.int16)
    assert np.abs(left - fit(first_in, 128, 96)).mean() < 4  # the input, cropped to the aspect
    clean = upscale(engine.reconstruct(fit(first_in, W, H)[None])[0], 128, 96)
    assert np.abs(right - fit(first_in, 128, 96)).mean() > 10  # the model's picture, not the input
    assert np.abs(right - clean).mean() > 0.5  # with latent noise


def test_without_ffmpeg_writes_video_only_and_says_so(make_video, tmp_path, engine, monkeypatch):
    src = with_audio(make_video("v.mp4", n_frames=12, width=96, height=64, fps=24.0), tmp_path / "a.mp4")
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # a PATH without ffmpeg or ffprobe
    logs: list[str] = []
    s = render.render(src, tmp_path / "out.mp4", engine, progress=False, log=logs.append)
    assert s["frames"] == 12 and not s["audio"] and s["writer"] == "opencv mp4v"
    said = [m for m in logs if not m.startswith("framing:")]
    assert len(said) == 1 and said[0].startswith("ffmpeg not found")
    assert len(read_video(tmp_path / "out.mp4")) == 12


def test_render_refusals(make_video, tmp_path, engine):
    src = make_video("v.mp4", n_frames=3, width=64, height=48)
    (tmp_path / "taken.mp4").write_bytes(b"old")
    with pytest.raises(UserError, match="--overwrite"):
        render.render(src, tmp_path / "taken.mp4", engine, progress=False)
    with pytest.raises(UserError, match="overwrite the input"):
        render.render(src, src, engine, overwrite=True, progress=False)
    with pytest.raises(UserError, match="unsupported video file type"):
        render.render(src, tmp_path / "x.gif", engine, progress=False)
    with pytest.raises(UserError, match="no such video"):
        render.render(tmp_path / "none.mp4", tmp_path / "y.mp4", engine, progress=False)
    for bad in ("1280", "12x12", "1281x720", "axb"):
        with pytest.raises(UserError, match="--upscale"):
            parse_size(bad, "--upscale", multiple=2, minimum=16)
    assert (tmp_path / "taken.mp4").read_bytes() == b"old"


def test_render_command(make_video, tmp_path, ckpt, capsys):
    src = make_video("v.mp4", n_frames=9, width=96, height=64, fps=30.0)
    out = tmp_path / "out.mp4"
    args = ["render", str(src), str(out), "--model", str(ckpt), "--batch", "4", "--noise", "0.3", "--seed", "7"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "9 frames" in captured.out and "x real time" in captured.out
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--overwrite" in err
    assert main([*args, "--overwrite", "--size", "640x3"]) == 2
    assert "--size" in capsys.readouterr().err


@pytest.mark.skipif(not assets.DEMO_CLIP.is_file(), reason="the bundled demo clip is not present")
def test_render_demo_keeps_its_frames_and_sound(tmp_path, engine):
    info = probe(assets.DEMO_CLIP)
    out = tmp_path / "demo.mp4"
    s = render.render("demo", out, engine, batch=16, progress=False, log=lambda m: None)
    so = streams(out)
    assert s["frames"] == int(so["video"]["nb_read_frames"]) and so["video"]["r_frame_rate"] == info.rate
    assert info.expected_frames is None or s["frames"] == info.expected_frames
    assert "audio" in so


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_interrupted_render_leaves_no_finished_file(make_video, tmp_path, ckpt, sig):
    src = make_video("long.mp4", n_frames=400, width=64, height=48, fps=25.0)
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "autoencoded", "render", str(src), str(out), "--model", str(ckpt),
                             "--upscale", "1280x720", "--batch", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            partial = [f for f in tmp_path.iterdir() if f.name.startswith(".out.mp4.") and f.name.endswith(".partial")]
            if partial and partial[0].stat().st_size > 0:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the render finished before it could be interrupted: " + proc.communicate()[1]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists(), "an interrupted render must not leave a file at the output name"
    left = [f.name for f in tmp_path.iterdir() if f.name != "long.mp4"]
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
        assert left == [], "a clean interruption removes its partial file"
    else:
        # the hidden partial, and the claim's lock file (fileio.Claim), which holds nothing once its process is gone
        assert all(n.startswith(".out.mp4.") and n.endswith(".partial") for n in left if n != ".out.mp4.lock")


def test_render_reacts_to_its_own_soundtrack(tmp_path):
    """`render --mod audio.onset:noise:1` on a still picture with a 120 BPM kick track: the frames that change
    most are the first ones at or after each kick (the demo model, as a user runs it)."""
    fps, seconds = 25.0, 3.0
    samples, kicks = kick_track(seconds=seconds, rate=48000, first=0.3)
    still = lambda i, w, h: synthetic_frame(0, w, h)  # noqa: E731 - the same picture in every frame
    video = write_video(tmp_path / "still.mp4", n_frames=int(fps * seconds), width=128, height=72, fps=fps,
                        frame_fn=still)
    film = tmp_path / "film.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-i", str(write_wav(tmp_path / "k.wav", samples,
                    48000)), "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "flac", str(film)], check=True)
    out = tmp_path / "out.mp4"
    done = subprocess.run([sys.executable, "-m", "autoencoded", "render", str(film), str(out), "--mod",
                           "audio.onset:noise:1", "--backend", "onnxruntime"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    frames = np.stack(read_video(out)).astype(np.float32)
    change = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))  # change[i]: frame i -> i + 1
    # the peaks: frames whose change from the previous frame stands far above the quiet level (the picture
    # is still and the model deterministic: between kicks only the fading noise moves it)
    quiet = np.median(change)
    peaks = [i + 1 for i in range(len(change)) if change[i] > 4 * quiet + 1.0
             and change[i] >= change[max(i - 1, 0)] and change[i] >= change[min(i + 1, len(change) - 1)]]
    # one peak per kick, on the first frame shown at or after it (onsets are found within 25 ms)
    assert len(peaks) == len(kicks), (peaks, kicks, np.round(change, 1).tolist())
    for p, k in zip(peaks, kicks, strict=True):
        assert k - 0.025 <= p / fps <= k + 1 / fps + 0.025, (p, k)


def test_render_mod_refusals(make_video, tmp_path, ckpt, capsys):
    video = make_video("silent.mp4", n_frames=4, width=W, height=H)
    for args, why in [(["--mod", "audio.bass:noise"], "--mod audio.bass:noise: expected SIGNAL:CONTROL:AMOUNT"),
                      (["--mod", "beat.pulse:noise:1"], "beat.pulse come from a live tempo source"),
                      (["--mod", "audio.bass:noise:1"], "has no soundtrack")]:
        assert main(["render", str(video), str(tmp_path / "o.mp4"), "--model", str(ckpt), *args]) == 2
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1, err
        assert not (tmp_path / "o.mp4").exists()


def test_render_preset_params_and_mods(make_video, tmp_path, ckpt):
    """A preset's [params] reach the render (mix 0 gives the input back) and the command line wins."""
    video = make_video("clip.mp4", n_frames=6, width=W, height=H)
    preset = tmp_path / "dry.toml"
    preset.write_text("[params]\nmix = 0.0\nnoise = 0.5\n")
    out = tmp_path / "dry.mp4"
    assert main(["render", str(video), str(out), "--model", str(ckpt), "--preset", str(preset), "--noise", "0"]) == 0
    got, src = read_video(out), read_video(video)
    assert len(got) == 6
    diff = np.mean([np.abs(g.astype(int) - fit(s, W, H).astype(int)).mean() for g, s in zip(got, src, strict=True)])
    assert diff < 4.0  # the input, re-encoded


def test_truncated_input_leaves_a_partial_named_file_and_exits_2(tmp_path, ckpt, capsys):
    """An AVI cut in half still declares 60 frames: the 30 that decode are rendered into out.partial.mp4,
    the command says where the input stopped, exits 2, and nothing is called out.mp4."""
    src = write_video(tmp_path / "cut.avi", n_frames=60, width=128, height=96, fps=25.0, fourcc="MJPG")
    data = src.read_bytes()
    src.write_bytes(data[:len(data) // 2])
    out = tmp_path / "out.mp4"
    assert main(["render", str(src), str(out), "--model", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "stopped at frame" in err and "of its 60" in err and "out.partial.mp4" in err
    assert not out.exists()
    partial = tmp_path / "out.partial.mp4"
    frames = int(streams(partial)["video"]["nb_read_frames"])
    assert 0 < frames < 60 and f"stopped at frame {frames} " in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
