"""Where frames go: a virtual camera, a preview window, a video file, nowhere (benchmarks), and through
their own modules NDI (live/io/ndi.py), Spout and Syphon (live/io/texture_share.py).

Every sink takes uint8 H x W x 3 RGB frames at the size given to `open`. Recordings are written by
`autoencoded.media.writers` (a hidden partial file, renamed only when complete).

SINKS, the registry, is the one place an output kind is named: `--output NAME[:ARG]`, live's --help and the
unknown-output line all come from it. A new kind is one `register_sink` call (here, or in a plugin module:
autoencoded.plugins), with a factory that takes one SinkOptions.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from autoencoded import plugins, signals
from autoencoded.errors import UserError
from autoencoded.extras import pip_install
from autoencoded.fileio import Claim, NameInUse
from autoencoded.live.io.realtime import RealTimeWriter
from autoencoded.live.io.sources import has_display
from autoencoded.media.writers import LIVE_PRESET, check_output_path, open_video_writer, supported_extensions


# ---------------------------------------------------------------------------------------------- sinks
class Sink(ABC):
    """Where frames go (several at once). Frames are uint8 RGB at the output size."""

    name = "sink"
    #: set by a sink whose user asked to stop (closed the preview window, pressed q or Esc)
    wants_stop = False
    #: seconds close() may take before the show ends without it (live/loop/outputs.py); None: it is waited
    #: for, as a recording is, whose file must be finished
    close_s: float | None = 5.0
    #: the plugin whose factory made it (autoencoded.plugins; set by open_sink), None for a built-in
    origin: str | None = None

    def open(self, width: int, height: int, fps: float) -> None:  # noqa: B027
        """Acquire the device or file. Raises UserError with one line when that is impossible."""

    @abstractmethod
    def write(self, frame: np.ndarray) -> None:
        """Show, send or record one frame."""

    def close(self) -> None:  # noqa: B027
        """Release the device, finish the file. Safe to call twice."""

    def note(self) -> str:
        """A word for the status line when this output is in trouble (a recorder behind), else ''."""
        return ""


class NullSink(Sink):
    """Discards frames (benchmarks); keeps the count and the last frame."""

    name = "null"

    def __init__(self) -> None:
        self.frames = 0
        self.last: np.ndarray | None = None

    def write(self, frame: np.ndarray) -> None:
        self.frames += 1
        self.last = frame


class RecorderSink(Sink):
    """A video file that keeps real time (live/io/realtime.py): N seconds of show play N seconds at the
    declared `fps`, and a slow encoder never holds up the other outputs. An existing file is replaced only
    when `overwrite`."""

    close_s = None  # the recording is finished, however long the encoder takes to catch up

    def __init__(self, path: str | os.PathLike, log: Callable[[str], None] = print, overwrite: bool = False,
                 free: bool = False) -> None:
        """The name is claimed here, at start (a second instance on it is refused, see fileio.Claim) and held
        until close(). free: take the first of NAME.EXT, NAME-2.EXT ... that is neither a file nor claimed."""
        wanted = check_output_path(path)
        for n in itertools.count(1):
            self.path = wanted if n == 1 else wanted.with_name(f"{wanted.stem}-{n}{wanted.suffix}")
            try:
                claim = Claim(self.path, "a recording")
            except NameInUse:
                if free:
                    continue
                raise
            if os.path.lexists(self.path) and not overwrite:
                claim.release()
                if free:
                    continue
                raise UserError(f"--output {path}: the file exists; pass --overwrite to replace it")
            break
        self.claim: Claim | None = claim
        self.overwrite = overwrite
        self.name = f"file {self.path}"
        self.log = log
        self.recorder: RealTimeWriter | None = None

    def open(self, width: int, height: int, fps: float) -> None:
        r = self.recorder
        if r is not None and (r.writer.width, r.writer.height, r.fps) == (width, height, fps):
            return
        self._finish()
        writer = open_video_writer(self.path, width, height, fps, preset=LIVE_PRESET, overwrite=self.overwrite,
                                   fragmented=True)
        if writer.backend.startswith("opencv"):  # as prepare and render say when they go without ffmpeg
            self.log(f"ffmpeg not found: recording {self.path} as {writer.backend.split()[-1]} through OpenCV "
                     "(bigger files than H.264, and some players refuse them; install ffmpeg for H.264)")
        self.recorder = RealTimeWriter(writer, fps)

    def write(self, frame: np.ndarray) -> None:
        if self.recorder is not None:  # a frame in flight while the loop closes the file is not a fault
            self.recorder.write(frame)

    @property
    def frames(self) -> int:
        return self.recorder.slots if self.recorder else 0

    def note(self) -> str:
        r = self.recorder
        if r is None:
            return ""
        lag = r.lag()
        if lag > max(0.25, 3.0 / r.fps) or r.dropped:
            return f"recorder {lag:.1f} s behind" + (f", {r.dropped} frames dropped" if r.dropped else "")
        return ""

    def close(self) -> None:
        try:
            self._finish()
        finally:
            if self.claim is not None:
                self.claim.release()
                self.claim = None

    def _finish(self) -> None:
        r, self.recorder = self.recorder, None
        if r is None:
            return
        # a second Ctrl-C (or a service manager's SIGTERM) while the file is finalised must not lose it
        with signals.held(f"the recording {self.path} (it is kept)"):
            if r.shown == 0:
                r.abort()
                self.log(f"{self.path}: no frames were recorded, no file written")
                return
            final = r.close()
        self.log(f"recorded {r.slots / r.fps:.1f} s to {final}"
                 f"{f' ({self.path.name} appeared meanwhile)' if final != self.path else ''} ({recording_counts(r)})")


def recording_counts(r: RealTimeWriter) -> str:
    """What a recording's frames are, in figures that add up: every frame of the file is a shown frame or a
    repeat (a new frame is a shown frame's first slot), and every shown frame is in the file, or came and went within one frame's slot, or was dropped
    while the encoder was behind."""
    kept = r.slots - r.repeated
    left = [f"{n} {why}" for n, why in ((r.skipped, "came and went within one frame's slot"),
                                        (r.dropped, "dropped while the encoder was behind")) if n]
    # "new": the file's frames that are a shown frame's first slot; "shown" stays the loop's count, so the
    # second clause says where the shown frames that are not in the file went
    return (f"{r.slots} frames at {r.fps:g} fps = {kept} new + {r.repeated} repeats"
            + (f"; of the {r.shown} frames shown, {' and '.join(left)}" if left else ""))


def vcam_help(platform: str | None = None) -> str:
    """What to do when no virtual camera device exists, for this OS."""
    platform = platform or sys.platform
    if platform.startswith("linux"):
        return ("load the v4l2loopback module once: sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
                "card_label=autoencoded (package v4l2loopback-dkms)")
    if platform == "darwin":
        return ("install OBS Studio 30+ and click Start Virtual Camera once (approve the system extension), "
                "then stop it and try again")
    if platform.startswith("win"):
        return "install OBS Studio 30+ and click Start Virtual Camera once, then stop it and try again"
    return "this OS has no supported virtual camera (use --output window or --output FILE)"


class VirtualCamSink(Sink):
    """A virtual camera through pyvirtualcam (v4l2loopback on Linux, OBS Virtual Camera on Windows/macOS)."""

    def __init__(self, device: str | None = None, log: Callable[[str], None] = print) -> None:
        self.device = device
        self.log = log
        self.cam = None
        self.name = "vcam"

    def open(self, width: int, height: int, fps: float) -> None:
        if self.cam is not None and (self.cam.width, self.cam.height) == (width, height):
            return  # already opened (the live command probes the device before the loop starts)
        self.close()
        try:
            import pyvirtualcam
        except ImportError:
            raise UserError(f"the virtual camera needs pyvirtualcam: {SINKS['vcam'].install} "
                            "(or use --output window / --output FILE)") from None
        try:
            self.cam = pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB,
                                           device=self.device)
        except (RuntimeError, OSError, ValueError) as exc:
            text = str(exc).strip()
            reason = text.splitlines()[0].split(". ")[0].rstrip(".")[:140] if text else type(exc).__name__
            raise UserError(f"no virtual camera ({reason}): {vcam_help()}") from None
        self.name = f"vcam {self.cam.device}"
        self.log(f"virtual camera: {self.cam.device} ({width}x{height} @ {fps:g} fps)")

    def write(self, frame: np.ndarray) -> None:
        self.cam.send(np.ascontiguousarray(frame))

    def close(self) -> None:
        cam, self.cam = self.cam, None
        if cam is not None:
            cam.close()


class WindowSink(Sink):
    """A preview window (OpenCV). q or Esc, or closing the window, stops the loop.

    The window lives on a thread of its own, which creates, shows, serves and destroys it: GUI toolkits
    serve a window on the thread that made it (OpenCV's Qt refuses timers from others, and a window made on
    the sink thread and destroyed from the main thread hung the stop for ever under X). `write` only hands
    the frame over; `close` asks the window thread to destroy the window and waits CLOSE_S for it."""

    CLOSE_S = 5.0
    close_s = CLOSE_S + 1.0  # its own wait for the window thread, and destroying the window

    def __init__(self, title: str = "autoencoded") -> None:
        self.title = title
        self.name = "window"
        self.size = (1280, 720)
        self._frame: np.ndarray | None = None
        self._new = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # what ended the window thread, raised by the next write
        self.shown = 0  # frames the window thread drew

    def open(self, width: int, height: int, fps: float) -> None:
        if not has_display():
            raise UserError("no display for a preview window ($DISPLAY and $WAYLAND_DISPLAY are unset); "
                            "use --output FILE or --output vcam")
        self.size = (width, height)

    def write(self, frame: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        if self._thread is None:  # made on the first frame: a window is not opened before the show starts
            self._thread = threading.Thread(target=self._serve, name="window", daemon=True)
            self._thread.start()
        self._frame = frame  # the newest frame wins: the window never holds up the loop
        self._new.set()

    def _serve(self) -> None:
        """The window thread: every call into the GUI toolkit for this window happens here."""
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
            cv2.resizeWindow(self.title, min(self.size[0], 1280), min(self.size[1], 720))
            while not self._closing.is_set():
                if self._new.wait(0.01):
                    self._new.clear()
                    cv2.imshow(self.title, cv2.cvtColor(self._frame, cv2.COLOR_RGB2BGR))
                    self.shown += 1
                key = cv2.waitKey(1) & 0xFF  # also serves the window's events while no frame comes
                if key in (27, ord("q")):
                    self.wants_stop = True
                elif self.shown and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                    self.wants_stop = True  # closed by its title bar's button
        except Exception as exc:  # noqa: BLE001 - handed to the loop through write()
            self.error = exc
        finally:
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._closing.set()
            thread.join(self.CLOSE_S)


# ------------------------------------------------------------------------------------------ the registry
@dataclass(frozen=True)
class SinkOptions:
    """What a sink's factory is given: what the command line says about that one output."""

    arg: str | None = None  # the ARG of --output NAME:ARG (None without one); a video file's path
    log: Callable[[str], None] = print  # event lines
    overwrite: bool = False  # an existing file may be replaced (--overwrite)


@dataclass(frozen=True)
class SinkKind:
    """One kind of output, named on the command line as --output NAME or NAME:ARG."""

    name: str
    factory: Callable[[SinkOptions], Sink]  # -> the sink, not yet opened
    help: str  # what it is, for --help
    extra: str | None = None  # the pip extra that brings its library
    arg: str | None = None  # what ARG is (shown as NAME[:ARG]); None: it takes none
    origin: str | None = None  # the plugin that registered it (autoencoded.plugins), None for a built-in

    @property
    def usage(self) -> str:
        return f"{self.name}[:{self.arg}]" if self.arg else self.name

    @property
    def install(self) -> str:
        """How to get its library: pip install 'autoencoded[EXTRA]' ('' for one that needs no extra)."""
        return pip_install(self.extra) if self.extra else ""


#: --output NAME[:ARG] -> its kind, in the order --help lists them (register_sink adds to it)
SINKS: dict[str, SinkKind] = {}


def register_sink(name: str, factory: Callable[[SinkOptions], Sink], help: str, extra: str | None = None,
                  arg: str | None = None) -> SinkKind:
    """Add an output kind: `--output NAME[:ARG]` then opens factory(SinkOptions(ARG, log, overwrite)), and
    live's --help and the unknown-output line list it. A plugin module calls this (see autoencoded.plugins)."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ValueError(f"sink name {name!r}: lower-case letters, digits, - and _, starting with a letter")
    if name in SINKS:
        raise ValueError(f"sink {name!r} is registered already")
    SINKS[name] = kind = SinkKind(name, factory, help, extra, arg, plugins.loading())
    return kind


def _ndi_sink(o: SinkOptions) -> Sink:
    from autoencoded.live.io.ndi import DEFAULT_NAME, NdiSink

    return NdiSink(o.arg or DEFAULT_NAME, log=o.log)


def _spout_sink(o: SinkOptions) -> Sink:
    from autoencoded.live.io.texture_share import SpoutSink

    return SpoutSink(o.arg or "autoencoded", log=o.log)


def _syphon_sink(o: SinkOptions) -> Sink:
    from autoencoded.live.io.texture_share import SyphonSink

    return SyphonSink(o.arg or "autoencoded", log=o.log)


register_sink("vcam", lambda o: VirtualCamSink(device=o.arg, log=o.log),
              "a virtual camera, or the one vcam:DEVICE names", extra="vcam")
register_sink("window", lambda o: WindowSink(), "a preview window, which q, Esc or closing it stops")
register_sink("null", lambda o: NullSink(), "nowhere (benchmarks)")
register_sink("ndi", _ndi_sink, "an NDI source on the network", extra="ndi", arg="NAME")
register_sink("spout", _spout_sink, "a Spout sender on Windows", extra="spout", arg="NAME")
register_sink("syphon", _syphon_sink, "a Syphon server on macOS", extra="syphon", arg="NAME")

#: an --output with a file extension that names no kind: a recording
VIDEO_FILE = SinkKind("FILE", lambda o: RecorderSink(o.arg, log=o.log, overwrite=o.overwrite),
                      "a recording that keeps real time")


def open_output(sink: Sink, width: int, height: int, fps: float) -> None:
    """sink.open(width, height, fps); what a plugin's sink raises there is one line naming the plugin."""
    origin = getattr(sink, "origin", None)
    plugins.made_by(origin if isinstance(origin, str) else None, f"output {sink.name}: opening",
                    lambda: sink.open(width, height, fps), object)


def sink_list() -> str:
    """'vcam, window, ..., ndi[:NAME] ... or a video file (.mp4, ...)': what --output takes."""
    return f"{', '.join(k.usage for k in SINKS.values())} or a video file ({supported_extensions()})"


def sink_help() -> str:
    """What each output kind is, and the extra it needs, for --help."""
    return "; ".join(f"{k.name}: {k.help}" + (f" (the {k.extra} extra)" if k.extra else "") for k in SINKS.values())


def open_sink(spec: str, log: Callable[[str], None] = print, overwrite: bool = False) -> Sink:
    """An --output value -> a Sink (not yet opened: see open_output)."""
    name, _, arg = spec.partition(":")
    if name in SINKS:
        kind = SINKS[name]
        options = SinkOptions(arg or None, log, overwrite)
        sink = plugins.made_by(kind.origin, f"output {name}", lambda: kind.factory(options), Sink)
        if kind.origin is not None:
            try:
                sink.origin = kind.origin
            except (AttributeError, TypeError):  # a sink with __slots__ or a frozen one: said as ours then
                pass
        return sink
    if Path(spec).suffix:
        return VIDEO_FILE.factory(SinkOptions(spec, log, overwrite))
    raise UserError(f"--output {spec}: expected {sink_list()}")
