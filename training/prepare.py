"""`autoencoded prepare`, the work: films in, a dataset folder out (format in training/data.py).

Frames stream into a temp file that starts with a reserved .npy header; at the end the real header
(with the final frame count) is written over it, the file is flushed and renamed to frames.npy, and only
then is dataset.json written (atomically). A crash, a full disk or Ctrl-C leaves no dataset.json, or an
older complete dataset untouched.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from autoencoded import __version__
from autoencoded.errors import UserError
from autoencoded.fileio import atomic_write_bytes
from autoencoded.media import framing
from autoencoded.media.framing import CROP_MODES
from autoencoded.media.probe import probe
from autoencoded.training import video
from autoencoded.training.data import FORMAT, FRAMES_FILE, META_FILE, VERSION

HEADER_BYTES = 128  # a v1.0 .npy header for any N x H x W x 3 uint8 shape fits in 128 bytes
THUMB = (32, 18)  # dedupe compares thumbnails this small: cheap, and blind to grain and compression noise


def npy_header(shape: tuple[int, ...], size: int = HEADER_BYTES) -> bytes:
    """A .npy v1.0 header for uint8 C-order data, padded with spaces to exactly `size` bytes."""
    dims = tuple(int(s) for s in shape)
    text = "{'descr': '|u1', 'fortran_order': False, 'shape': " + repr(dims) + ", }"
    pad = size - 10 - len(text) - 1
    if pad < 0:
        raise ValueError(f"shape {shape} does not fit a {size}-byte .npy header")
    return b"\x93NUMPY\x01\x00" + (size - 10).to_bytes(2, "little") + (text + " " * pad + "\n").encode("latin1")


class FramesWriter:
    """Appends uint8 H x W x 3 frames to `DIR/.frames.npy.tmp`; `finish()` makes it `DIR/frames.npy`."""

    def __init__(self, folder: Path, width: int, height: int) -> None:
        self.folder, self.width, self.height = folder, width, height
        self.tmp = folder / f".{FRAMES_FILE}.tmp"
        self.count = 0
        self._f = open(self.tmp, "wb")  # noqa: SIM115 - closed in finish()/abort()
        self._f.write(b"\0" * HEADER_BYTES)

    def append(self, frame: np.ndarray) -> None:
        self._f.write(np.ascontiguousarray(frame, dtype=np.uint8).data)
        self.count += 1

    def finish(self) -> Path:
        self._f.seek(0)
        self._f.write(npy_header((self.count, self.height, self.width, 3)))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        final = self.folder / FRAMES_FILE
        os.replace(self.tmp, final)
        return final

    def abort(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass
        try:
            self.tmp.unlink()
        except OSError:
            pass


@dataclass
class Summary:
    kept: int = 0
    decoded: int = 0
    dropped_every: int = 0
    dropped_dedupe: int = 0
    duration_s: float = 0.0
    bytes: int = 0
    seconds: float = 0.0
    partial: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.decoded / self.seconds if self.seconds > 0 else 0.0

    @property
    def realtime(self) -> float:
        return self.duration_s / self.seconds if self.seconds > 0 else 0.0


def prepare_output(out: Path, overwrite: bool) -> None:
    """Create the output folder, or refuse an existing non-empty one unless overwriting."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: already exists (pass --overwrite to replace the dataset in it)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{out}: cannot write there ({exc.strerror or exc})") from None


# long: one FramesWriter's lifetime, and every way out of it (done, no frames, a failed write, Ctrl-C) finishes or aborts it
def prepare(videos: Sequence[str | os.PathLike], out: str | os.PathLike, size: tuple[int, int] = (256, 144),
            every: int = 1, dedupe: float | None = None, crop: str = "auto", overwrite: bool = False,
            max_frames: int | None = None,
            progress: Callable[[int, int | None, str], None] | None = None) -> tuple[dict, Summary]:
    """Decode `videos` in order into the dataset folder `out`. Returns (dataset.json content, summary).

    `progress(frames_decoded_so_far, total_expected_or_None, source_name)` is called as frames arrive.
    A source that stops early leaves a dataset marked partial (complete=false); the caller reports it.
    """
    width, height = size
    _check_arguments(videos, every, dedupe, crop, max_frames)
    decoder = video.decoder_name()
    # every input is checked before anything is written; ffprobe (when installed) also for the OpenCV
    # decoder, since only it tells a frame count the container declares from one estimated from duration
    infos = [probe(v) for v in videos]
    out = Path(out)
    prepare_output(out, overwrite)

    total = sum(i.expected_frames or 0 for i in infos) or None
    summary = Summary()
    sources: list[dict] = []
    start = time.perf_counter()
    try:
        writer = FramesWriter(out, width, height)
    except OSError as exc:
        raise UserError(f"{out}: cannot write there ({exc.strerror or exc})") from None
    try:
        for info in infos:
            if max_frames is not None and summary.kept >= max_frames:
                break
            box = framing.for_video(info, crop, width, height, crop_limit=1.0, decoder=decoder).box
            state = video.Decoded()
            rec = _run_source(info, decoder, box, size, crop, every, dedupe, max_frames, writer, summary,
                              state, progress, total)
            sources.append(rec)
            if rec["stopped_at"] is not None:
                of = (f" of {'about ' if info.estimated else ''}{info.expected_frames}" if info.expected_frames
                      else "")
                summary.partial.append(f"{info.path}: stopped at frame {rec['stopped_at']}{of} ({rec['error']})")
        if summary.kept == 0:
            names = ", ".join(str(i.path) for i in infos)
            why = next((s["error"] for s in sources if s["error"]), None)
            raise UserError(f"{names}: no decodable frames" + (f" ({why})" if why else ""))
        old_meta = out / META_FILE
        if old_meta.exists():  # never let an old dataset.json describe the new frames
            old_meta.unlink()
        frames_path = writer.finish()
    except OSError as exc:
        writer.abort()
        raise UserError(f"{out}: cannot write the dataset ({exc.strerror or exc}); nothing was kept") from None
    except BaseException:
        writer.abort()
        raise
    summary.seconds = time.perf_counter() - start
    summary.bytes = frames_path.stat().st_size
    meta = {
        "format": FORMAT, "version": VERSION, "complete": not summary.partial,
        "frames": summary.kept, "width": width, "height": height, "every": every, "dedupe": dedupe,
        "crop": crop, "sources": sources,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "tool_version": __version__,
    }
    _write_meta(out, meta)
    return meta, summary


def _check_arguments(videos, every: int, dedupe: float | None, crop: str, max_frames: int | None) -> None:
    if not videos:
        raise UserError("no input video given")
    if every < 1:
        raise UserError(f"--every {every}: must be 1 or more")
    if dedupe is not None and dedupe < 0:
        raise UserError(f"--dedupe {dedupe}: must be 0 or more")
    if crop not in CROP_MODES:
        raise UserError(f"--crop {crop!r}: use one of {', '.join(CROP_MODES)}")
    if max_frames is not None and max_frames < 1:
        raise UserError(f"--max-frames {max_frames}: must be 1 or more")


def _write_meta(out: Path, meta: dict) -> None:
    """dataset.json, written last: a dataset folder without it is no dataset."""
    try:
        atomic_write_bytes(out / META_FILE, (json.dumps(meta, indent=2) + "\n").encode())
    except OSError as exc:
        raise UserError(f"{out}: cannot write {META_FILE} ({exc.strerror or exc}); the dataset is unusable") \
            from None


def _run_source(info, decoder, box, size, crop, every, dedupe, max_frames, writer: FramesWriter,
                summary: Summary, state, progress, total) -> dict:
    kept = dropped_dedupe = 0
    last_thumb = None
    name = info.path.name
    base = summary.decoded
    stream = video.frames(info, decoder, box, size[0], size[1], crop, state)
    try:
        for i, frame in enumerate(stream):
            if progress and (i & 7) == 0:
                progress(base + i + 1, total, name)
            if i % every:
                summary.dropped_every += 1
                continue
            if dedupe is not None:
                thumb = cv2.resize(frame, THUMB, interpolation=cv2.INTER_AREA).astype(np.int16)
                if last_thumb is not None and float(np.abs(thumb - last_thumb).mean()) < dedupe:
                    dropped_dedupe += 1
                    continue
                last_thumb = thumb
            writer.append(frame)
            kept += 1
            summary.kept += 1
            if max_frames is not None and summary.kept >= max_frames:
                break
    finally:
        stream.close()
    summary.decoded += state.frames
    summary.dropped_dedupe += dropped_dedupe
    seconds = state.frames / info.fps if info.fps else (info.duration_s or 0.0)
    summary.duration_s += seconds
    if progress:
        progress(summary.decoded, total, name)
    return {
        "path": str(info.path), "fps": info.fps, "frames_decoded": state.frames, "frames_kept": kept,
        "frames_dropped_dedupe": dropped_dedupe, "duration_s": round(seconds, 3), "crop_box": list(box),
        "stopped_at": state.stopped_at, "error": state.error,
        "reframed": state.reframed,  # where the picture changes size part-way, and how it was framed from there
    }
