"""The prepared dataset, read side: frames read as they are asked for, never loaded whole.

A dataset is a folder written by `autoencoded prepare` (training/prepare.py):

    DATASET/frames.npy     uint8 N x H x W x 3, RGB, standard .npy (np.load(..., mmap_mode="r") opens it)
    DATASET/dataset.json   {"format": "autoencoded-dataset", "version": 1, "complete": bool, "frames": N,
                            "width": W, "height": H, "every": n, "dedupe": t|null, "crop": mode,
                            "sources": [{"path", "fps", "frames_decoded", "frames_kept",
                                         "frames_dropped_dedupe", "duration_s", "crop_box": [x, y, w, h],
                                         "stopped_at": null|int, "error": null|str}],
                            "created": iso time, "tool_version": str}

dataset.json is written last, so a folder without it was never finished. `complete` is false when a
source stopped early (truncated or corrupted mid-stream): those frames are usable, but only on request.

frames.npy is read with positioned reads from the file opened, not memory-mapped: a memory-mapped file
cut short while a run reads it (prepare into the same folder, a copy over it) kills the process with SIGBUS
at the first page past its new end, with no message and no checkpoint. A read comes back short instead, and
before each read the file is checked to be the one opened, as long as it was; either change is one
DatasetChanged line.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

import numpy as np

from autoencoded.documents import parse_json
from autoencoded.errors import UserError, one_line

FORMAT = "autoencoded-dataset"
VERSION = 1
FRAMES_FILE = "frames.npy"
META_FILE = "dataset.json"


class DatasetChanged(UserError):
    """frames.npy is no longer the file that was opened, as long as it was (truncated, rewritten, replaced)."""


class FramesFile:
    """The frames of a frames.npy (uint8 N x H x W x 3, C order), read by os.preadv from the descriptor opened,
    each read preceded by a check that the name still leads to that file, unchanged (size, mtime)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        weakref.finalize(self, os.close, self.fd)
        with os.fdopen(os.dup(self.fd), "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, self.dtype = read_header(f, max_header_size=100_000)
            self.offset = f.tell()
        if fortran:
            raise ValueError("frames stored in Fortran order")
        self.shape = tuple(int(d) for d in shape)
        self.frame_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        st = os.fstat(self.fd)
        self.identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if st.st_size < self.offset + self.shape[0] * self.frame_bytes:
            raise ValueError(f"{st.st_size} bytes, too short for its {self.shape[0]} frames")

    def check(self) -> None:
        """DatasetChanged unless `path` is still the file opened, with the size and mtime it had then."""
        dev, ino, size, mtime = self.identity
        try:
            now = os.stat(self.path)
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (dev, ino):
            raise DatasetChanged(f"{self.path}: replaced or removed while in use (the dataset changed under it)")
        mine = os.fstat(self.fd)
        if mine.st_size != size:
            raise DatasetChanged(f"{self.path}: changed while in use: {mine.st_size} bytes, {size} when opened "
                                 f"(truncated or rewritten)")
        if mine.st_mtime_ns != mtime:
            raise DatasetChanged(f"{self.path}: rewritten while in use (modified since it was opened)")

    def read(self, idx: np.ndarray, out: np.ndarray) -> None:
        """out[k] = frame idx[k] for ascending `idx`; a run of consecutive frames is one read."""
        self.check()
        flat = out.reshape(len(idx), -1).view(np.uint8)
        start = 0
        breaks = np.nonzero(np.diff(idx) != 1)[0] + 1
        for end in [*breaks.tolist(), len(idx)]:
            view = memoryview(flat[start:end]).cast("B")
            pos = self.offset + int(idx[start]) * self.frame_bytes
            while view:
                n = os.preadv(self.fd, [view], pos)
                if n <= 0:
                    raise DatasetChanged(f"{self.path}: ends before frame {int(idx[start])} it held when opened "
                                         f"(truncated while in use)")
                view, pos = view[n:], pos + n
            start = end


class FrameDataset:
    """Frames of a prepared dataset: `ds[i]` is one uint8 H x W x 3 RGB frame, `ds.batch(idx)` a stack."""

    def __init__(self, path: Path, frames: FramesFile, meta: dict, allow_partial: bool) -> None:
        self.path = path
        self.frames = frames
        self.meta = meta
        self._allow_partial = allow_partial

    @property
    def width(self) -> int:
        return int(self.meta["width"])

    @property
    def height(self) -> int:
        return int(self.meta["height"])

    @property
    def complete(self) -> bool:
        return bool(self.meta["complete"])

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def __getitem__(self, i: int) -> np.ndarray:
        return self.batch([i])[0]

    def batch(self, indices) -> np.ndarray:
        """uint8 B x H x W x 3 copy of the frames at `indices` (read from disk in ascending order)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"frame index out of range for a dataset of {len(self)} frames")
        idx = np.where(idx < 0, idx + len(self), idx)
        order = np.argsort(idx, kind="stable")
        out = np.empty((idx.size, *self.frames.shape[1:]), dtype=np.uint8)
        if idx.size and np.all(np.diff(idx) >= 0):
            self.frames.read(idx, out)  # already in order (a film read through): straight into the result
        elif idx.size:
            got = np.empty_like(out)
            self.frames.read(idx[order], got)
            out[order] = got
        return out

    # DataLoader workers get the path and reopen the file, never a copy of the frames.
    def __getstate__(self) -> dict:
        return {"path": str(self.path), "allow_partial": self._allow_partial}

    def __setstate__(self, state: dict) -> None:
        other = open_dataset(state["path"], allow_partial=state["allow_partial"])
        self.__dict__.update(other.__dict__)

    def __repr__(self) -> str:
        state = "complete" if self.complete else "partial"
        return f"FrameDataset({str(self.path)!r}, {len(self)} frames {self.width}x{self.height}, {state})"


def read_meta(path: str | os.PathLike) -> dict:
    """dataset.json of a dataset folder, checked for the fields the reader relies on."""
    folder = Path(path)
    if not folder.exists():
        raise UserError(f"{folder}: no such dataset folder")
    if not folder.is_dir():
        raise UserError(f"{folder}: not a dataset folder (run 'autoencoded prepare VIDEO -o {folder}' first)")
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise UserError(f"{folder}: no {META_FILE} (not a dataset, or 'autoencoded prepare' did not finish)")
    try:
        meta = parse_json(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad UTF-8, bad JSON, nested too deeply
        raise UserError(f"{meta_path}: unreadable or corrupt ({one_line(exc)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{meta_path}: not an autoencoded dataset description")
    if meta.get("version") != VERSION:
        raise UserError(f"{meta_path}: dataset version {meta.get('version')!r} is not supported "
                        f"(this tool reads version {VERSION}; prepare it again)")
    for key in ("frames", "width", "height"):
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UserError(f"{meta_path}: corrupt (field {key!r} is {value!r})")
    if not isinstance(meta.get("complete"), bool):
        raise UserError(f"{meta_path}: corrupt (field 'complete' is {meta.get('complete')!r})")
    return meta


def open_dataset(path: str | os.PathLike, allow_partial: bool = False) -> FrameDataset:
    """Open a prepared dataset for reading. Bad or partial datasets raise UserError with one line.

    A partial dataset (a source stopped early) opens only with allow_partial=True; the caller warns.
    """
    folder = Path(path)
    meta = read_meta(folder)
    if not meta["complete"] and not allow_partial:
        stopped = [s for s in meta.get("sources", []) if isinstance(s, dict) and s.get("stopped_at") is not None]
        where = f" ({stopped[0].get('path')} stopped at frame {stopped[0].get('stopped_at')})" if stopped else ""
        raise UserError(f"{folder}: dataset is partial{where}; open it with allow_partial (train --allow-partial) to use it anyway")
    if meta["frames"] == 0:
        raise UserError(f"{folder}: dataset has no frames")
    frames_path = folder / FRAMES_FILE
    if not frames_path.is_file():
        raise UserError(f"{folder}: no {FRAMES_FILE}")
    try:
        frames = FramesFile(frames_path)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{frames_path}: unreadable or corrupt ({one_line(exc)})") from None
    expected = (meta["frames"], meta["height"], meta["width"], 3)
    if frames.dtype != np.uint8 or frames.shape != expected:
        got = f"{getattr(frames, 'dtype', '?')} {tuple(getattr(frames, 'shape', ()))}"
        raise UserError(f"{frames_path}: holds {got}, but {META_FILE} says uint8 {expected}")
    return FrameDataset(folder, frames, meta, allow_partial)
