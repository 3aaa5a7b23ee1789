"""GPU texture sharing with VJ apps on the same machine: Spout on Windows (SpoutGL, the `spout` extra) and
Syphon on macOS (syphon-python, the `syphon` extra). Resolume, TouchDesigner, MadMapper, OBS (with its
plugins) and VDMX pick the output up by name.

Both take RGBA; the frame is converted once per write into a buffer reused across frames. On another OS,
or without the library, `open` stops with one line that says what to use instead.
"""

from __future__ import annotations

import sys
from abc import abstractmethod
from collections.abc import Callable

import cv2
import numpy as np

from autoencoded.errors import UserError, one_line
from autoencoded.live.io.sinks import SINKS, Sink

GL_RGBA = 0x1908  # OpenGL's enum value, so that PyOpenGL is not needed just for a constant


class _RgbaSink(Sink):
    kind = ""
    platform = ""  # sys.platform prefix where it exists
    os_name = ""
    module = ""  # the library's import name (its pip extra is the registry's: SINKS[kind].extra)
    #: what to use on the other OSes
    elsewhere = "use --output ndi, --output vcam or --output window"

    def __init__(self, name: str = "autoencoded", log: Callable[[str], None] = print) -> None:
        if not name.strip():
            raise UserError(f"--output {self.kind}:NAME: the name is empty")
        self.share_name = name
        self.name = f"{self.kind} {name}"
        self.log = log
        self.size: tuple[int, int] | None = None
        self._rgba: np.ndarray | None = None

    def _load(self, platform: str | None = None):
        """The library's module, or a UserError of one line (another OS, or the extra missing)."""
        if not (platform or sys.platform).startswith(self.platform):
            raise UserError(f"{self.kind.capitalize()} exists only on {self.os_name}; {self.elsewhere}")
        try:
            return __import__(self.module)
        except ImportError:
            raise UserError(f"{self.kind.capitalize()} needs {self.module}: {SINKS[self.kind].install}") from None

    def open(self, width: int, height: int, fps: float) -> None:
        if self._is_open() and self.size == (width, height):
            return
        self.close()
        lib = self._load()
        try:
            self._start(lib, width, height)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - the library's own errors (no GPU context, no Metal device)
            raise UserError(f"{self.kind.capitalize()}: cannot start {self.share_name!r} ({one_line(exc)})") from None
        self.size = (width, height)
        self._rgba = np.empty((height, width, 4), np.uint8)
        self.log(f"{self.kind.capitalize()}: sharing {self.share_name!r} ({width}x{height})")

    def write(self, frame: np.ndarray) -> None:
        cv2.cvtColor(frame, cv2.COLOR_RGB2RGBA, dst=self._rgba)
        self._send(self._rgba)

    # per library
    @abstractmethod
    def _is_open(self) -> bool:
        """Whether the sender or server is running."""

    @abstractmethod
    def _start(self, lib, width: int, height: int) -> None:
        """Create the sender or server."""

    @abstractmethod
    def _send(self, rgba: np.ndarray) -> None:
        """Share one RGBA frame."""


class SpoutSink(_RgbaSink):
    """A Spout sender (Windows). SpoutGL makes its own OpenGL context when the thread has none."""

    kind, platform, os_name, module = "spout", "win", "Windows", "SpoutGL"

    def __init__(self, name: str = "autoencoded", log: Callable[[str], None] = print) -> None:
        super().__init__(name, log)
        self.sender = None

    def _is_open(self) -> bool:
        return self.sender is not None

    def _start(self, lib, width: int, height: int) -> None:
        sender = lib.SpoutSender()
        sender.setSenderName(self.share_name)
        self.sender = sender

    def _send(self, rgba: np.ndarray) -> None:
        h, w = rgba.shape[:2]
        if not self.sender.sendImage(rgba, w, h, GL_RGBA, False, 0):
            raise OSError("Spout refused the frame (no OpenGL context or shared texture)")
        self.sender.setFrameSync(self.share_name)  # receivers waiting on the frame sync get it now

    def close(self) -> None:
        sender, self.sender = self.sender, None
        if sender is not None:
            sender.releaseSender()


class SyphonSink(_RgbaSink):
    """A Syphon Metal server (macOS 11+): each frame is copied into one reused Metal texture and published."""

    kind, platform, os_name, module = "syphon", "darwin", "macOS", "syphon"

    def __init__(self, name: str = "autoencoded", log: Callable[[str], None] = print) -> None:
        super().__init__(name, log)
        self.server = None
        self.texture = None

    def _is_open(self) -> bool:
        return self.server is not None

    def _start(self, lib, width: int, height: int) -> None:
        from syphon.utils.raw import create_mtl_texture

        server = lib.SyphonMetalServer(self.share_name)
        self.texture = create_mtl_texture(server.device, width, height)  # RGBA8Unorm
        self.server = server

    def _send(self, rgba: np.ndarray) -> None:
        from syphon.utils.raw import copy_bytes_to_mtl_texture

        copy_bytes_to_mtl_texture(rgba.data, self.texture)
        self.server.publish_frame_texture(self.texture)

    def close(self) -> None:
        server, self.server, self.texture = self.server, None, None
        if server is not None:
            server.stop()
