"""training/data.py: the memory-mapped dataset reader, on datasets written by the real writer."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from autoencoded.errors import UserError
from autoencoded.fileio import atomic_write_bytes
from autoencoded.training.data import META_FILE, open_dataset
from autoencoded.training.prepare import FramesWriter


def write_dataset(folder, frames: np.ndarray, complete: bool = True, **meta) -> None:
    """A dataset written the way prepare writes it (FramesWriter + dataset.json last)."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w, _ = frames.shape
    writer = FramesWriter(folder, w, h)
    for f in frames:
        writer.append(f)
    writer.finish()
    doc = {"format": "autoencoded-dataset", "version": 1, "complete": complete, "frames": n, "width": w,
           "height": h, "every": 1, "dedupe": None, "crop": "auto",
           "sources": [{"path": "clip.avi", "fps": 24.0, "frames_decoded": n, "frames_kept": n,
                        "frames_dropped_dedupe": 0, "duration_s": n / 24, "crop_box": [0, 0, w, h],
                        "stopped_at": None if complete else n, "error": None if complete else "truncated"}],
           "created": "2026-01-01T00:00:00+00:00", "tool_version": "test", **meta}
    atomic_write_bytes(folder / META_FILE, json.dumps(doc).encode())


@pytest.fixture
def frames():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (7, 32, 48, 3), dtype=np.uint8)


def test_reads_frames_as_asked(tmp_path, frames):
    write_dataset(tmp_path / "ds", frames)
    ds = open_dataset(tmp_path / "ds")
    assert (len(ds), ds.width, ds.height, ds.complete) == (7, 48, 32, True)
    assert ds[3].dtype == np.uint8 and np.array_equal(ds[3], frames[3])
    got = ds.batch([5, 0, 5, -1])
    assert got.shape == (4, 32, 48, 3) and np.array_equal(got, frames[[5, 0, 5, -1]])
    with pytest.raises(IndexError):
        ds.batch([7])
    # np.load sees a standard .npy
    assert np.array_equal(np.load(tmp_path / "ds" / "frames.npy", mmap_mode="r"), frames)


def test_pickles_by_path_not_by_content(tmp_path, frames):
    write_dataset(tmp_path / "ds", frames)
    ds = open_dataset(tmp_path / "ds")
    blob = pickle.dumps(ds)
    assert len(blob) < 1000  # DataLoader workers reopen the file instead of copying the frames
    again = pickle.loads(blob)
    assert np.array_equal(again.batch([1, 2]), frames[1:3]) and np.array_equal(again[6], frames[6])


def test_partial_needs_allow_partial(tmp_path, frames):
    write_dataset(tmp_path / "ds", frames, complete=False)
    with pytest.raises(UserError, match="partial"):
        open_dataset(tmp_path / "ds")
    ds = open_dataset(tmp_path / "ds", allow_partial=True)
    assert ds.complete is False and len(ds) == 7


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def test_missing_folder_and_files(tmp_path, frames):
    with pytest.raises(UserError, match="no such dataset folder") as e:
        open_dataset(tmp_path / "nope")
    _one_line(e)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a dataset folder"):
        open_dataset(tmp_path / "file")
    write_dataset(tmp_path / "ds", frames)
    (tmp_path / "ds" / "frames.npy").unlink()
    with pytest.raises(UserError, match="no frames.npy"):
        open_dataset(tmp_path / "ds")
    write_dataset(tmp_path / "ds2", frames)
    (tmp_path / "ds2" / META_FILE).unlink()
    with pytest.raises(UserError, match="no dataset.json"):
        open_dataset(tmp_path / "ds2")


@pytest.mark.parametrize("damage", ["json-garbage", "json-not-dataset", "json-version", "json-field",
                                    "npy-truncated", "npy-garbage", "shape-mismatch", "dtype-mismatch"])
def test_corrupt_dataset_is_one_line_error(tmp_path, frames, damage):
    ds = tmp_path / "ds"
    write_dataset(ds, frames)
    meta, npy = ds / META_FILE, ds / "frames.npy"
    doc = json.loads(meta.read_text())
    if damage == "json-garbage":
        meta.write_bytes(b"{\"format\": \"autoencoded-data\xff")
    elif damage == "json-not-dataset":
        meta.write_text("[1, 2]")
    elif damage == "json-version":
        meta.write_text(json.dumps({**doc, "version": 99}))
    elif damage == "json-field":
        meta.write_text(json.dumps({**doc, "width": "48"}))
    elif damage == "npy-truncated":
        npy.write_bytes(npy.read_bytes()[:1000])
    elif damage == "npy-garbage":
        npy.write_bytes(b"not a numpy file at all" * 100)
    elif damage == "shape-mismatch":
        meta.write_text(json.dumps({**doc, "frames": 8}))
    elif damage == "dtype-mismatch":
        np.save(npy, frames.astype(np.float32))
    with pytest.raises(UserError) as e:
        open_dataset(ds)
    _one_line(e)
