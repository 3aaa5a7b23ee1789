"""Audio analysis for modulation: loudness, three bands and onsets, each 0..1 with automatic gain.

    analyzer = AudioAnalyzer(rate=48000)
    analyzer.feed(block)          # mono float32 samples, any block size, from any one thread
    analyzer.values               # {"audio.level": .., "audio.bass": .., "audio.mid": .., "audio.high": ..,
                                  #  "audio.onset": ..} (a new dict per analysis step: safe to read anywhere)

Frames of N samples (about 21 ms: 1024 at 44.1/48 kHz), Hann window, hop N/2. Bands: bass 20-250 Hz,
mid 250-4000 Hz, high above 4 kHz. Automatic gain: each signal is divided by its own peak, which decays
with a time constant of AGC_TAU_S, above a floor (about -80 dBFS) so that silence stays 0.

Onsets: causal spectral flux (sum of the rises of the log-compressed magnitude spectrum from one frame to
the next), picked with an adaptive threshold (a multiple of its recent mean plus a fraction of its
recent peak) on the rising edge, at most one per REFRACTORY_S. Only past samples are used, so it runs
live; it is plain numpy (librosa's first call compiles for over 20 s). `audio.onset` is 1 at an onset and
decays with ONSET_TAU_S, so that a video frame sampled up to a frame interval later still sees it.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

AUDIO_SIGNALS = ("audio.level", "audio.bass", "audio.mid", "audio.high", "audio.onset")
BANDS = {"audio.bass": (20.0, 250.0), "audio.mid": (250.0, 4000.0), "audio.high": (4000.0, 20000.0)}
AGC_TAU_S = 4.0
AGC_FLOOR = 1e-4
LOG_GAIN = 100.0  # log1p(LOG_GAIN * magnitude): compresses the spectrum before the flux
THRESHOLD_WINDOW_S = 0.3
THRESHOLD_MEAN = 1.6  # flux must exceed this multiple of its recent mean...
THRESHOLD_PEAK = 0.15  # ...plus this fraction of its recent peak,
MIN_FLUX = 0.25  # and this much at least (mean rise of log1p(100 |X|) per bin: noise alone stays below)
REFRACTORY_S = 0.06
ONSET_TAU_S = 0.06


def frame_size(rate: int) -> int:
    """The power of two nearest to 21 ms of audio (1024 at 44.1 and 48 kHz)."""
    return 1 << max(6, round(math.log2(rate * 0.0213)))


class AudioAnalyzer:
    def __init__(self, rate: int) -> None:
        if rate < 8000:
            raise ValueError(f"sample rate {rate} Hz is too low (at least 8000)")
        self.rate = int(rate)
        self.n = frame_size(self.rate)
        self.hop = self.n // 2
        self.hop_s = self.hop / self.rate
        self._window = np.hanning(self.n).astype(np.float32)
        self._scale = np.float32(2.0 / self._window.sum())  # a full-scale sine peaks at about 1
        freqs = np.fft.rfftfreq(self.n, 1.0 / self.rate)
        self._bands = {name: (freqs >= lo) & (freqs < hi) for name, (lo, hi) in BANDS.items()}
        self._buf = np.zeros(self.n, dtype=np.float32)
        self._fill = 0  # samples in _buf not yet analysed (the last `hop` of them are new)
        self._pending = np.zeros(0, dtype=np.float32)
        self._prev_log: np.ndarray | None = None
        self._agc_decay = math.exp(-self.hop_s / AGC_TAU_S)
        self._peaks = dict.fromkeys(("audio.level", *BANDS, "flux"), AGC_FLOOR)
        self._flux_recent: deque[float] = deque(maxlen=max(3, round(THRESHOLD_WINDOW_S / self.hop_s)))
        self._prev_flux = 0.0
        self._onset_decay = math.exp(-self.hop_s / ONSET_TAU_S)
        self._onset = 0.0
        self._since_onset = math.inf
        self.samples = 0  # samples analysed so far (the stream position, for timing)
        self.onsets: list[float] = []  # onset times in seconds of stream time (the frame's centre)
        self.values: dict[str, float] = dict.fromkeys(AUDIO_SIGNALS, 0.0)

    def feed(self, samples: np.ndarray) -> int:
        """Analyse mono samples (float, -1..1); returns the number of analysis steps taken."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.ndim != 1:
            raise ValueError("mono samples expected")
        if self._pending.size:
            x = np.concatenate([self._pending, x])
        steps = 0
        at = 0
        while x.size - at >= self.hop:
            self._step(x[at:at + self.hop])
            at += self.hop
            steps += 1
        self._pending = x[at:].copy()
        return steps

    def _step(self, hop: np.ndarray) -> None:
        hop = np.nan_to_num(hop, nan=0.0, posinf=0.0, neginf=0.0)
        self._buf[:-self.hop] = self._buf[self.hop:]
        self._buf[-self.hop:] = hop
        self.samples += self.hop
        mag = np.abs(np.fft.rfft(self._buf * self._window)) * self._scale
        raw = {"audio.level": float(np.sqrt(np.mean(hop * hop)))}
        power = mag * mag
        for name, mask in self._bands.items():
            raw[name] = float(np.sqrt(power[mask].sum()))
        values = {name: self._agc(name, v) for name, v in raw.items()}

        log_mag = np.log1p(LOG_GAIN * mag)
        flux = 0.0
        if self._prev_log is not None and self.samples > self.n:  # the first frames rise out of the zeros
            rise = np.maximum(log_mag - self._prev_log, 0.0)
            # the mean rise per band, and the largest of them: a kick's few bass bins weigh as much as a
            # hi-hat's hundreds of high ones
            flux = max(float(rise[mask].mean()) for mask in self._bands.values())
        self._prev_log = log_mag
        self._agc("flux", flux)
        recent = sum(self._flux_recent) / len(self._flux_recent) if self._flux_recent else 0.0
        threshold = max(THRESHOLD_MEAN * recent + THRESHOLD_PEAK * self._peaks["flux"], MIN_FLUX)
        self._since_onset += self.hop_s
        self._onset *= self._onset_decay
        warm = len(self._flux_recent) * 2 >= self._flux_recent.maxlen  # a threshold needs some history
        if warm and flux > threshold and flux > self._prev_flux and self._since_onset >= REFRACTORY_S:
            self._onset = 1.0
            self._since_onset = 0.0
            self.onsets.append((self.samples - self.n / 2) / self.rate)
            if len(self.onsets) > 4096:
                del self.onsets[:2048]
        self._flux_recent.append(flux)
        self._prev_flux = flux
        values["audio.onset"] = self._onset
        self.values = values  # one reference swap: readers on other threads see a whole step

    def _agc(self, name: str, x: float) -> float:
        peak = max(x, self._peaks[name] * self._agc_decay, AGC_FLOOR)
        self._peaks[name] = peak
        return min(1.0, x / peak) if x > AGC_FLOOR else 0.0


def analyze_track(samples: np.ndarray, rate: int) -> tuple[np.ndarray, dict[str, np.ndarray], list[float]]:
    """A whole soundtrack, causally, step by step: (times, {signal: values}, onset times).

    times[k] is the stream time of step k's frame centre: what it hears is about that moment, so a video
    frame at time t takes the last step with times[k] <= t (see signals_at).
    """
    a = AudioAnalyzer(rate)
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    times, series = [], {name: [] for name in AUDIO_SIGNALS}
    for at in range(0, x.size - a.hop + 1, a.hop):
        a._step(x[at:at + a.hop])
        times.append((a.samples - a.n / 2) / rate)
        for name in AUDIO_SIGNALS:
            series[name].append(a.values[name])
    return (np.asarray(times, dtype=np.float64),
            {k: np.asarray(v, dtype=np.float32) for k, v in series.items()}, list(a.onsets))


def signals_at(times: np.ndarray, series: dict[str, np.ndarray], t: float) -> dict[str, float]:
    """The signals a video frame at stream time t sees (the last analysis step at or before t; 0 before)."""
    k = int(np.searchsorted(times, t, side="right")) - 1
    if k < 0:
        return dict.fromkeys(series, 0.0)
    return {name: float(v[k]) for name, v in series.items()}
