"""The memory bank of a model pack: the latent means of the film's own frames, for the `memory` control.

    MODEL/memory.safetensors   "latents": float16 N x z_dim (the encoder's means, as ONNX Runtime computes
                               them), "frames": int32 N (the frame of the footage each one came from)
    MODEL/model.json "memory"  {"file", "count", "dtype", "sha256", "step", "source": {...},
                                "reduction": {...}, "created"}

`step` is the median distance between consecutive frames of the film in latent space (before dedupe): the
scale of "the input moved" for the memory's hysteresis (autoencoded.live.control.memory).

Nearness is by direction from the film's centre (the bank's mean latent): cosine similarity of the centred
latents, searched as Euclidean distance between unit vectors (2 - 2 cos). Footage the model never saw
encodes weaker than its film (nearer the centre), and by plain distance it is then nearest to the film's
weakest frames, the fades and hazes every input is near (what was measured: docs/models.md).
safetensors holds plain arrays (never pickle). A pack keeps its bank within the pack budget of
MAX_PACK_BYTES (export reduces it to fit); a reader refuses, with one line, a file over MAX_BANK_BYTES, an
empty bank, rows with NaN/Inf, a latent size other than the model's, and a file that does not match
model.json. A pack without a bank (made before banks existed) is not an error: `read_bank` gives None.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autoencoded.errors import UserError, one_line
from autoencoded.fileio import atomic_write_bytes
from autoencoded.live.engines.memory_index import EXACT_MAX, NearestIndex
from autoencoded.live.engines.pack import safe_member

MEMORY_FILE = "memory.safetensors"
MAX_PACK_BYTES = 40_000_000  # a whole pack, ONNX files and bank together (40 MB)
MAX_BANK_BYTES = 64 << 20  # the largest bank file a reader opens
STORED_DTYPE = np.float16  # 2 bytes a value: a 170k-frame film fits beside the model (float32 would not)
META_KEY = "memory"


@dataclass
class MemoryBank:
    """A loaded, checked bank with its search index (built here, off the engine thread)."""

    latents: np.ndarray  # float32 N x z_dim
    frames: np.ndarray  # int64 N: source frame of each row
    step: float
    info: dict
    exact_max: int = EXACT_MAX  # past this many rows, faiss (when installed) searches
    centre: np.ndarray = field(init=False, repr=False)
    index: NearestIndex = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.centre = self.latents.mean(axis=0)
        self.index = NearestIndex(directions(self.latents, self.centre), exact_max=self.exact_max)

    @property
    def z_dim(self) -> int:
        return int(self.latents.shape[1])

    def search(self, mu: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k rows nearest to the latent `mu` in direction: (squared unit-vector distances, rows)."""
        return self.index.search(directions(np.asarray(mu, np.float32)[None], self.centre)[0], k)

    def describe(self) -> str:
        src = self.info.get("source") if isinstance(self.info.get("source"), dict) else {}
        name = Path(str(src.get("footage", "?"))).name
        return f"{len(self.latents)} frames of {name} remembered ({self.index.kind} search)"


def directions(latents: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Unit vectors from `centre` toward each row (a row at the centre stays 0: equally far from all)."""
    v = np.asarray(latents, np.float32) - centre
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def check_latents(latents: np.ndarray, z_dim: int, where: str) -> np.ndarray:
    """The refusals shared by writing and reading: a 2-D array of z_dim columns, some rows, all finite."""
    if latents.ndim != 2 or latents.shape[1] != z_dim:
        shape = " x ".join(map(str, latents.shape))
        raise UserError(f"{where}: memory latents are {shape}, but the model's latent size is {z_dim} (refused)")
    if len(latents) == 0:
        raise UserError(f"{where}: the memory bank is empty (refused)")
    bad = int((~np.isfinite(latents).all(axis=1)).sum())
    if bad:
        raise UserError(f"{where}: {bad} of the memory bank's {len(latents)} rows hold NaN or Inf (refused)")
    return latents


def write_bank(pack_dir: Path, latents: np.ndarray, frames: np.ndarray, z_dim: int, *, step: float,
               source: dict, reduction: dict, created: str) -> dict:
    """Write MODEL/memory.safetensors (atomically) and return the record model.json keeps under "memory"."""
    from safetensors.numpy import save

    latents = check_latents(np.asarray(latents), z_dim, str(pack_dir))
    stored = latents.astype(STORED_DTYPE)
    if not np.isfinite(stored).all():  # beyond float16's range: no encoder with a tanh gives that
        raise UserError(f"{pack_dir}: memory latents overflow float16 (refused)")
    frames = np.asarray(frames, dtype=np.int32).reshape(-1)
    if len(frames) != len(latents):
        raise ValueError("one source frame per latent")
    if not (math.isfinite(step) and step > 0):
        raise UserError(f"{pack_dir}: the film's frames do not move in latent space (step {step}); "
                        "no memory bank written")
    data = save({"latents": np.ascontiguousarray(stored), "frames": frames})
    atomic_write_bytes(pack_dir / MEMORY_FILE, data)
    return {"file": MEMORY_FILE, "count": len(latents), "dtype": np.dtype(STORED_DTYPE).name,
            "sha256": hashlib.sha256(data).hexdigest(), "step": float(step), "source": source,
            "reduction": reduction, "created": created}


def read_bank(pack_dir: str | Path, meta: dict, z_dim: int) -> MemoryBank | None:
    """The pack's bank, checked and indexed; None when model.json names none. Refusals: one UserError line."""
    from safetensors.numpy import load

    pack_dir = Path(pack_dir)
    info = meta.get(META_KEY)
    if info is None:
        return None
    if not isinstance(info, dict):
        raise UserError(f"{pack_dir}: model.json's \"memory\" is not a record (refused)")
    path = safe_member(pack_dir, info.get("file"), "memory bank")
    if not path.is_file():
        raise UserError(f"{pack_dir}: memory bank {info.get('file')} is missing")
    size = path.stat().st_size
    if size > MAX_BANK_BYTES:
        raise UserError(f"{path}: {size} bytes, over the {MAX_BANK_BYTES} a memory bank may have (refused)")
    data = path.read_bytes()
    if info.get("sha256") is not None and hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise UserError(f"{path}: does not match model.json (changed after it was written; "
                        "run `autoencoded memory` again)")
    try:
        tensors = load(data)
    except Exception as exc:  # SafetensorError and friends: a torn or foreign file
        raise UserError(f"{path}: not a readable safetensors file ({one_line(exc)})") from None
    if set(tensors) != {"latents", "frames"}:
        raise UserError(f"{path}: holds {sorted(tensors)}, expected 'latents' and 'frames' (refused)")
    latents, frames = tensors["latents"], tensors["frames"]
    if latents.dtype not in (np.float16, np.float32) or frames.dtype not in (np.int32, np.int64):
        raise UserError(f"{path}: latents are {latents.dtype} and frames {frames.dtype}, expected float16 "
                        "and int32 (refused)")
    latents = check_latents(latents.astype(np.float32), z_dim, str(path))
    if frames.shape != (len(latents),):
        raise UserError(f"{path}: {frames.shape} source frames for {len(latents)} latents (refused)")
    count = info.get("count")
    if count != len(latents):
        raise UserError(f"{path}: holds {len(latents)} latents, model.json says {count!r} (refused)")
    step = info.get("step")
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step) or step <= 0:
        raise UserError(f"{pack_dir}: model.json's memory step is {step!r}, not a positive number (refused)")
    return MemoryBank(latents=latents, frames=frames.astype(np.int64), step=float(step), info=info)


def rows_within(pack_dir: Path, z_dim: int, budget: int = MAX_PACK_BYTES) -> int:
    """How many bank rows keep the whole pack (its other files as they are now) within `budget` bytes."""
    others = sum(p.stat().st_size for p in pack_dir.iterdir() if p.is_file() and p.name != MEMORY_FILE)
    slack = 64 << 10  # safetensors header, and model.json growing by the bank's record
    row = z_dim * np.dtype(STORED_DTYPE).itemsize + np.dtype(np.int32).itemsize
    return max(0, (budget - others - slack) // row)
