"""Live audio in (the `audio` extra: sounddevice on PortAudio), analysed on its own thread.

    with AudioInput(analyzer_factory, device="default", log=print) as audio:
        audio.values    # the latest AudioAnalyzer values, all 0 while no device delivers

A missing extra, a machine without PortAudio or without that device is one line in the log, and the show
goes on with the audio signals at 0: nothing here ever raises into the live loop. A device that fails
mid-show (unplugged) is reopened every few seconds.
"""

from __future__ import annotations

from collections.abc import Callable

from autoencoded import stderr
from autoencoded.errors import one_line
from autoencoded.extras import pip_install
from autoencoded.live.audio.analysis import AUDIO_SIGNALS, AudioAnalyzer
from autoencoded.service import ThreadService

REOPEN_S = 3.0


def parse_device(spec: str) -> int | str | None:
    """'default' -> None (PortAudio's default input), '3' -> device index 3, else a part of its name."""
    spec = spec.strip()
    if spec in ("", "default", "auto"):
        return None
    return int(spec) if spec.isdigit() else spec


class AudioInput(ThreadService):
    thread_name = "audio-input"

    def __init__(self, device: str = "default", *, rate: int | None = None,
                 log: Callable[[str], object] | None = None, backend=None) -> None:
        super().__init__()
        self.device = parse_device(device)
        self.spec = device
        self.rate = rate
        self.log = log or (lambda line: None)
        self.backend = backend  # sounddevice, or anything with its InputStream/query_devices (tests)
        self.analyzer: AudioAnalyzer | None = None
        self.state = "starting"  # starting | open | unavailable | reopening | stopped
        self.overflows = 0
        self._zero = dict.fromkeys(AUDIO_SIGNALS, 0.0)

    @property
    def values(self) -> dict[str, float]:
        a = self.analyzer
        return a.values if a is not None and self.state == "open" else self._zero

    def _stopped(self) -> None:
        self.state = "stopped"

    def _sd(self):
        if self.backend is None:
            # the `audio` extra; raises OSError when PortAudio itself is missing. Importing it initialises
            # PortAudio with fd 2 silenced, which must not swallow another thread's log line
            with stderr.held():
                import sounddevice

            self.backend = sounddevice
        return self.backend

    def _open(self):
        sd = self._sd()
        info = sd.query_devices(self.device, "input")
        rate = int(self.rate or info.get("default_samplerate") or 48000)
        self.analyzer = AudioAnalyzer(rate)
        stream = sd.InputStream(device=self.device, channels=1, samplerate=rate, dtype="float32",
                                blocksize=self.analyzer.hop)
        stream.start()
        return stream, info.get("name", str(self.spec))

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                stream, name = self._open()
            except ImportError:
                self.state = "unavailable"
                self.log(f"audio: sounddevice is not installed ({pip_install('audio')}); "
                         "audio-reactive modulation is off")
                return
            except Exception as exc:  # PortAudioError, ValueError (no such device), OSError (no PortAudio)
                if first:
                    self.log(f"audio: no input {self.spec!r} ({one_line(exc, typed=True)}); audio signals stay "
                             "at 0, the show goes on")
                first = False
                self.state = "unavailable"
                self._stop.wait(REOPEN_S)
                continue
            self.state = "open"
            self.log(f"audio: listening to {name} at {self.analyzer.rate} Hz")
            try:
                with stream:
                    while not self._stop.is_set():
                        data, overflowed = stream.read(self.analyzer.hop)
                        self.overflows += bool(overflowed)
                        self.analyzer.feed(data[:, 0] if getattr(data, "ndim", 1) == 2 else data)
            except Exception as exc:  # the device went away mid-show
                if not self._stop.is_set():
                    self.log(f"audio: input stopped ({one_line(exc, typed=True)}); reopening")
                    self.state = "reopening"
                    first = True
                    self._stop.wait(REOPEN_S)
