"""Audio analysis (numpy, causal): onsets of a synthetic 120 BPM kick track within 25 ms, bands, automatic
gain, streaming = offline; the soundtrack decoded by ffmpeg; live input through real PortAudio."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from autoencoded.errors import UserError
from autoencoded.live.audio.analysis import AUDIO_SIGNALS, AudioAnalyzer, analyze_track, signals_at
from autoencoded.media.audio import read_soundtrack

from helpers import alsa_file_device, kick_track, write_video, write_wav

TOLERANCE_S = 0.025


def matched(found, truth, tol=TOLERANCE_S):
    found = np.asarray(found)
    return [float(np.min(np.abs(found - t))) if found.size else np.inf for t in truth]


@pytest.mark.parametrize("rate", [44100, 48000])
def test_kicks_at_120_bpm_are_found_within_25_ms(rate):
    x, kicks = kick_track(seconds=8.0, rate=rate)
    _, _, onsets = analyze_track(x, rate)
    errors = matched(onsets, kicks)
    assert max(errors) <= TOLERANCE_S, [round(e * 1000, 1) for e in errors]
    # nothing is found where there is no event (the off-beat hi-hats may count as onsets)
    events = np.concatenate([kicks, kicks + 0.25])
    stray = [o for o in onsets if np.min(np.abs(events - o)) > TOLERANCE_S]
    assert not stray, stray


def test_streaming_in_odd_blocks_equals_the_whole_track_and_is_causal():
    rate = 44100
    x, _ = kick_track(seconds=3.0, rate=rate)
    times, series, onsets = analyze_track(x, rate)
    a = AudioAnalyzer(rate)
    rng = np.random.default_rng(1)
    at, seen = 0, []
    while at < x.size:
        n = int(rng.integers(1, 3000))
        a.feed(x[at:at + n])
        at += n
        seen.append((a.samples, dict(a.values)))
    assert a.onsets == onsets
    # causal: changing the future leaves every value up to now unchanged
    cut = x.size // 2
    y = x.copy()
    y[cut:] = np.random.default_rng(2).normal(0, 0.5, y.size - cut)
    _, series_y, _ = analyze_track(y, rate)
    k = int(np.searchsorted(times, (cut - a.n) / rate))  # steps whose frame ends before the cut
    for name in AUDIO_SIGNALS:
        assert np.array_equal(series[name][:k], series_y[name][:k])
        assert not np.array_equal(series[name], series_y[name])


def test_bands_follow_the_spectrum_and_gain_is_automatic():
    rate = 48000
    t = np.arange(rate * 2) / rate
    low = (0.5 * np.sin(2 * np.pi * 80 * t)).astype(np.float32)
    high = (0.5 * np.sin(2 * np.pi * 8000 * t)).astype(np.float32)
    # a quiet bass tone then a quiet high tone: each band fills its own range, at any level
    for level in (1.0, 0.01):
        a = AudioAnalyzer(rate)
        a.feed(level * low)
        v = a.values
        assert v["audio.bass"] > 0.9 and v["audio.level"] > 0.9 and v["audio.high"] < 0.05
        a.feed(level * high)
        v = a.values
        assert v["audio.high"] > 0.9 and v["audio.bass"] < 0.05
    # silence is 0 everywhere (the gain does not amplify nothing into something)
    a = AudioAnalyzer(rate)
    a.feed(np.zeros(rate, np.float32))
    assert all(v == 0.0 for v in a.values.values())
    a.feed(np.full(100, np.nan, np.float32))  # garbage from a driver never poisons the state
    a.feed(low)
    assert all(np.isfinite(v) and 0 <= v <= 1 for v in a.values.values())


def test_onset_signal_is_a_pulse_that_video_frames_sample():
    rate = 44100
    x, kicks = kick_track(seconds=4.0, rate=rate)
    times, series, onsets = analyze_track(x, rate)
    fps = 30.0
    assert len(onsets) >= len(kicks)
    # the first video frame at or after each onset sees the pulse high, the frame before it does not
    for t in onsets:
        frame = np.ceil(t * fps) / fps
        assert signals_at(times, series, frame)["audio.onset"] > 0.5
        assert signals_at(times, series, frame - 1 / fps)["audio.onset"] < 0.1
    assert signals_at(times, series, -1.0) == dict.fromkeys(AUDIO_SIGNALS, 0.0)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_soundtrack_decoded_by_ffmpeg(tmp_path):
    x, kicks = kick_track(seconds=3.0, rate=48000)
    wav = write_wav(tmp_path / "kicks.wav", x, 48000)
    silent = write_video(tmp_path / "silent.mp4", n_frames=30, width=64, height=48, fps=25.0)
    film = tmp_path / "film.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(silent), "-i", str(wav), "-c:v", "copy", "-c:a", "flac",
                    "-shortest", str(film)], check=True)
    track = read_soundtrack(film)
    assert track.rate == 44100 and abs(track.offset_s) < 0.05
    _, _, onsets = analyze_track(track.samples, track.rate)
    assert max(matched(np.asarray(onsets) + track.offset_s, kicks[kicks < 1.2])) <= TOLERANCE_S
    with pytest.raises(UserError, match="has no soundtrack"):
        read_soundtrack(silent)




@pytest.mark.skipif(sys.platform != "linux", reason="ALSA file device")
def test_live_input_through_portaudio(tmp_path):
    """A real PortAudio input: an ALSA device that plays a file (no sound card needed), read by AudioInput."""
    pytest.importorskip("sounddevice")
    rate = 48000
    x, kicks = kick_track(seconds=3.0, rate=rate)
    alsa_file_device(tmp_path, x)
    code = textwrap.dedent(f"""
        import time
        from autoencoded.live.audio.device import AudioInput
        lines = []
        audio = AudioInput("kicks", rate={rate}, log=lines.append).start()
        deadline = time.monotonic() + 20
        while (audio.analyzer is None or audio.analyzer.samples < {x.size}) and time.monotonic() < deadline:
            time.sleep(0.01)
        audio.stop()
        print(lines)
        print(repr([t for t in audio.analyzer.onsets if t < {x.size / rate - 0.5}]))
    """)
    done = subprocess.run([sys.executable, "-c", code], env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines, onsets = done.stdout.strip().splitlines()[-2:]
    assert "audio: listening to kicks at 48000 Hz" in lines
    onsets = eval(onsets)  # a list of floats printed by repr
    assert max(matched(onsets, kicks[kicks < x.size / rate - 0.5])) <= TOLERANCE_S


def test_no_audio_device_is_one_line_and_signals_stay_zero():
    pytest.importorskip("sounddevice")
    from autoencoded.live.audio.device import AudioInput

    lines = []
    with AudioInput("no such device here", log=lines.append) as audio:
        deadline = __import__("time").monotonic() + 5
        while not lines and __import__("time").monotonic() < deadline:
            __import__("time").sleep(0.01)
        assert audio.values == dict.fromkeys(AUDIO_SIGNALS, 0.0)
    assert len(lines) == 1 and lines[0].startswith("audio: no input 'no such device here'"), lines
    assert "the show goes on" in lines[0]
