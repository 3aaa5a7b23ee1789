"""NDI in and out through cyndilib (the `ndi` extra; its Linux wheel carries the NDI runtime).

NDI® is a registered trademark of Vizrt NDI AB. The NDI SDK is not part of this project: cyndilib (MIT)
brings the runtime when the extra is installed.

- `NdiSink` (`--output ndi[:NAME]`) sends the output as the NDI source "HOST (NAME)". The loop paces the
  frames, so the sender is not clocked by NDI (a clocked send would block the sink thread).
- `NdiSource` (`--input ndi:NAME`) receives another app's output with a camera's semantics: it is live
  (never paced by us), and the watchdog feed holds the last frame when the sender stalls or goes away and
  reopens (finds and connects again) with backoff.
- Every name seen on the network (other senders' names in "no NDI source named ..." lines) is printed
  escaped: a sender may put terminal control sequences in its name.
- Discovery on a machine without a network needs NDI told to use the loopback address:
  `write_localhost_config()` writes `ndi-config.v1.json` with `{"ndi": {"networks": {"ips": "127.0.0.1"}}}`
  into the folder named by `NDI_CONFIG_DIR` (`--ndi-localhost`). The NDI runtime reads it when it starts,
  so it is written before cyndilib is first imported.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from autoencoded.errors import UserError, one_line
from autoencoded.fileio import atomic_write_bytes
from autoencoded.live.io.sinks import SINKS, Sink
from autoencoded.live.io.sources import Reader, Source
from autoencoded.text import printable

CONFIG_NAME = "ndi-config.v1.json"
DEFAULT_CONFIG_DIR = Path("~/.config/autoencoded/ndi")
DEFAULT_NAME = "autoencoded"
POLL_S = 0.003
# NDI limits a source's full name, "HOST (NAME)", to 253 characters (the NDI SDK's documentation); past it
# the runtime itself crashed (SIGSEGV inside NDIlib_send_create here, from 254 bytes on)
MAX_SOURCE_NAME = 253


def source_name(host: str, name: str) -> str:
    """The full name NDI gives a sender called `name` on `host`."""
    return f"{host} ({name})"


def check_name(name: str, option: str) -> str:
    """`name` when NDI can take it (not empty, its full name within MAX_SOURCE_NAME UTF-8 bytes, no NUL), else
    one UserError line (the name shown escaped and cut short)."""
    shown = printable(name, limit=60)
    if not name.strip():
        raise UserError(f"{option}: the NDI name is empty")
    if "\x00" in name:
        raise UserError(f"{option} {shown}: an NDI name cannot hold a NUL character")
    full = len(source_name(socket.gethostname(), name).encode("utf-8", "surrogatepass"))
    if full > MAX_SOURCE_NAME:
        room = MAX_SOURCE_NAME - (full - len(name.encode("utf-8", "surrogatepass")))
        raise UserError(f"{option} {shown}: an NDI name is at most {room} bytes on this machine ("
                        f"NDI's limit is {MAX_SOURCE_NAME} for 'HOST (NAME)'; this one is {full})")
    return name


def fit_name(name: str) -> str:
    """`name` cut (at a character) so that its full NDI name fits MAX_SOURCE_NAME (our receiver's own name)."""
    room = MAX_SOURCE_NAME - len(source_name(socket.gethostname(), "").encode())
    return name.encode("utf-8", "surrogatepass")[:max(room, 1)].decode("utf-8", "ignore")


def cyndilib():
    """The cyndilib module, or a UserError that says how to install it."""
    try:
        import cyndilib as lib
    except ImportError:
        raise UserError(f"NDI needs cyndilib: {SINKS['ndi'].install}") from None
    except OSError as exc:  # the wheel is there but the NDI runtime library did not load
        raise UserError(f"cyndilib could not load the NDI runtime ({one_line(exc)})") from None
    return lib


def write_localhost_config(folder: str | os.PathLike | None = None) -> Path:
    """Point NDI discovery and transport at 127.0.0.1: writes `ndi-config.v1.json` into `folder` (default
    $NDI_CONFIG_DIR, else ~/.config/autoencoded/ndi) and sets NDI_CONFIG_DIR for this process. Other keys
    of an existing file are kept. Returns the file's path."""
    folder = Path(folder or os.environ.get("NDI_CONFIG_DIR") or DEFAULT_CONFIG_DIR).expanduser()
    path = folder / CONFIG_NAME
    config: dict = {}
    if path.is_file():
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: cannot read the NDI config to update it ({one_line(exc)})") from None
        if not isinstance(config, dict):
            raise UserError(f"{path}: the NDI config is not a JSON object")
    ndi = config.setdefault("ndi", {})
    networks = ndi.setdefault("networks", {}) if isinstance(ndi, dict) else None
    if not isinstance(networks, dict):
        raise UserError(f"{path}: 'ndi' or 'ndi.networks' is not a JSON object")
    networks["ips"] = "127.0.0.1"
    try:
        atomic_write_bytes(path, (json.dumps(config, indent=2) + "\n").encode())
    except OSError as exc:
        raise UserError(f"{folder}: cannot write {CONFIG_NAME} ({one_line(exc)})") from None
    os.environ["NDI_CONFIG_DIR"] = str(folder)
    return path


def _frame_rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


class NdiSink(Sink):
    """Sends frames as an NDI source named NAME (RGBX; NDI compresses them with its own codec)."""

    def __init__(self, name: str = DEFAULT_NAME, log: Callable[[str], None] = print) -> None:
        self.ndi_name = check_name(name, "--output ndi:NAME")
        self.name = f"ndi {name}"
        self.log = log
        self.sender = None
        self.size: tuple[int, int] | None = None
        self._rgbx: np.ndarray | None = None

    def open(self, width: int, height: int, fps: float) -> None:
        if self.sender is not None and self.size == (width, height):
            return
        self.close()
        lib = cyndilib()
        from cyndilib.video_frame import VideoSendFrame
        from cyndilib.wrapper.ndi_structs import FourCC

        frame = VideoSendFrame()
        frame.set_resolution(width, height)
        frame.set_frame_rate(_frame_rate(fps))
        frame.set_fourcc(FourCC.RGBX)
        sender = lib.Sender(self.ndi_name, clock_video=False, clock_audio=False)
        sender.set_video_frame(frame)
        try:
            sender.open()
        except Exception as exc:  # noqa: BLE001 - the runtime's own errors
            raise UserError(f"NDI: cannot start the sender {self.ndi_name!r} ({one_line(exc)})") from None
        self.sender, self.size = sender, (width, height)
        self._rgbx = np.empty((height, width, 4), np.uint8)
        self.log(f"NDI: sending {self.ndi_name!r} ({width}x{height} @ {fps:g} fps)")

    def write(self, frame: np.ndarray) -> None:
        cv2.cvtColor(frame, cv2.COLOR_RGB2RGBA, dst=self._rgbx)
        # async: returns at once; cyndilib copies the frame into its own buffers first, so ours is reusable
        if not self.sender.write_video_async(self._rgbx.reshape(-1)):
            raise OSError("the NDI sender refused the frame")

    def connections(self, timeout: float = 0.0) -> int:
        """How many receivers are connected (0 when not sending)."""
        return self.sender.get_num_connections(timeout) if self.sender is not None else 0

    def loopback(self) -> NdiSource:
        """A Source that receives this sink's own stream (the latency probe reads it back)."""
        return NdiSource(self.ndi_name)

    def close(self) -> None:
        sender, self.sender = self.sender, None
        if sender is not None:
            sender.close()


class _NdiReader(Reader):
    """A Finder that looks the sender up by name, and a Receiver read through NDI's frame synchroniser."""

    def __init__(self, source: NdiSource) -> None:
        lib = cyndilib()
        from cyndilib.video_frame import VideoFrameSync
        from cyndilib.wrapper.ndi_recv import RecvBandwidth, RecvColorFormat
        from cyndilib.wrapper.ndi_structs import FourCC

        self.source = source
        self._bgr_order = {FourCC.BGRA, FourCC.BGRX}
        self._last_stamp: float | None = None
        self.finder = lib.Finder()
        self.receiver = None
        try:
            self.finder.open()
            found = self._find()
            self.receiver = lib.Receiver(color_format=RecvColorFormat.RGBX_RGBA, bandwidth=RecvBandwidth.highest,
                                         recv_name=fit_name(f"autoencoded <- {source.ndi_name}"))
            self.frame = VideoFrameSync()
            self.receiver.frame_sync.set_video_frame(self.frame)
            self.receiver.set_source(found)
            deadline = time.monotonic() + source.connect_timeout
            while not self.receiver.is_connected():
                if time.monotonic() > deadline:
                    raise OSError(f"NDI source '{printable(found.name)}' found but did not connect "
                                  f"within {source.connect_timeout:g} s")
                time.sleep(0.02)
        except BaseException:
            self.close()
            raise

    def _find(self):
        want = self.source.ndi_name
        deadline = time.monotonic() + self.source.find_timeout
        while True:
            for found in self.finder.iter_sources():
                if want in (found.name, found.stream_name):
                    return found
            left = deadline - time.monotonic()
            if left <= 0:
                seen = ", ".join(f"'{printable(n, 120)}'" for n in self.finder.get_source_names()[:20]) or "none"
                raise OSError(f"no NDI source named {want!r} (seen: {seen})")
            # the Finder's own thread updates the list; its wait_for_sources() would keep the GIL while it waits
            time.sleep(min(left, 0.05))

    def read(self) -> np.ndarray | None:
        """The newest frame; None when no new one came for `give_up` s (the feed then reconnects).

        The frame synchroniser always answers at once with the newest frame it holds (a repeat when nothing
        new came), so a new frame is one with a new timestamp; between asks the thread sleeps a few ms (far
        below a frame interval). cyndilib's blocking receive() would keep the GIL while it waits and stall
        every other thread of the loop."""
        deadline = time.monotonic() + self.source.give_up
        frame = self.frame
        while True:
            self.receiver.frame_sync.capture_video()
            width, height = frame.get_resolution()
            stamp = frame.get_timestamp_posix()
            if width > 0 and height > 0 and frame.get_data_size() > 0 and stamp != self._last_stamp:
                break
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL_S)
        self._last_stamp = stamp
        stride = frame.get_line_stride()
        data = frame.get_array()
        if width < 2 or height < 2 or stride < 4 * width or data.size < height * stride:
            return np.zeros((0, 0), np.uint8)  # the feed reports it as garbage
        pixels = data[:height * stride].reshape(height, stride)[:, :4 * width].reshape(height, width, 4)
        code = cv2.COLOR_BGRA2RGB if frame.get_fourcc() in self._bgr_order else cv2.COLOR_RGBA2RGB
        return cv2.cvtColor(pixels, code)  # a new array: the synchroniser's buffer is reused

    def close(self) -> None:
        receiver, self.receiver = self.receiver, None
        if receiver is not None:
            try:
                receiver.disconnect()
            except Exception:
                pass
        finder, self.finder = self.finder, None
        if finder is not None:
            finder.close()


class NdiSource(Source):
    """Another app's NDI output, by its name ("HOST (NAME)") or just NAME. Live, like a camera."""

    camera = True
    freeze_check = False  # NDI stamps every frame it sends: a still picture from another app is not a fault

    def __init__(self, name: str, fps: float = 30.0, find_timeout: float = 4.0, connect_timeout: float = 3.0,
                 give_up: float = 2.0) -> None:
        if not name.strip():
            raise UserError("--input ndi:NAME: give the NDI source's name after 'ndi:'")
        if len(name.encode("utf-8", "surrogatepass")) > MAX_SOURCE_NAME or "\x00" in name:
            raise UserError(f"--input ndi:{printable(name, limit=60)}: no NDI source can have this name (NDI "
                            f"names are at most {MAX_SOURCE_NAME} bytes, 'HOST (NAME)' included, without NUL)")
        cyndilib()  # a missing extra is the user's to fix now, not an outage to retry
        self.ndi_name = name
        self.name = f"ndi {name}"
        self.fps = float(fps)
        self.find_timeout, self.connect_timeout, self.give_up = find_timeout, connect_timeout, give_up

    def open(self) -> Reader:
        return _NdiReader(self)
