"""The TensorRT engine cache: serialized engines kept outside the model pack, safe against staleness.

An engine is only valid for the exact ONNX graph, TensorRT version, GPU model and compute capability,
precision, shape range and build settings it was built for. All of these make up the EngineKey; its digest names the
file, and the full key is stored again in the file's header and compared on load, so a renamed, stale
or foreign file never matches. The payload's sha256 is in the header too: a truncated or corrupt file is
detected and rebuilt, never handed to the TensorRT runtime.

File layout: MAGIC (8 bytes) | header length (uint32 little-endian) | header JSON | engine bytes.
Folder: $AUTOENCODED_CACHE/engines, else ~/.cache/autoencoded/engines.
This module imports no GPU library, so it is tested on any machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from autoencoded.documents import parse_json
from autoencoded.training.weights import atomic_write_bytes

MAGIC = b"AEENGIN1"
HEADER_MAX = 1 << 20


def cache_dir() -> Path:
    root = os.environ.get("AUTOENCODED_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "autoencoded"
    return base / "engines"


@dataclass(frozen=True)
class EngineKey:
    model_hash: str          # sha256 over the pack's ONNX files
    part: str                # "encoder", "decoder" or "fused"
    trt_version: str         # tensorrt.__version__
    gpu_name: str            # e.g. "NVIDIA H100 80GB HBM3"
    compute_capability: str  # e.g. "9.0"
    precision: str           # "fp16" or "fp32"
    shape: str               # the optimisation profiles, e.g. "image:1x3x144x256/...|image:..."
    builder: str             # how engines are built (tensorrt_build.BUILDER_VERSION): new settings rebuild

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()

    def filename(self) -> str:
        return f"{self.part}-{self.precision}-{self.digest()[:32]}.engine"


def encode_file(key: EngineKey, payload: bytes, extra: dict | None = None) -> bytes:
    header = {"key": dataclasses.asdict(key), "sha256": hashlib.sha256(payload).hexdigest(),
              "size": len(payload), "extra": extra or {}}
    h = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(h)) + h + payload


def decode_file(data: bytes, key: EngineKey) -> tuple[bytes | None, str, dict]:
    """-> (payload or None, why it was rejected or "ok", header extra)."""
    if len(data) < len(MAGIC) + 4 or data[:len(MAGIC)] != MAGIC:
        return None, "not an engine cache file (bad magic)", {}
    (n,) = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if n > HEADER_MAX or start + n > len(data):
        return None, "corrupt header (truncated)", {}
    try:
        header = parse_json(data[start:start + n])
    except ValueError:
        return None, "corrupt header (not JSON)", {}
    if not isinstance(header, dict) or header.get("key") != dataclasses.asdict(key):
        return None, "built for a different model, GPU, TensorRT version, precision, shape or builder", {}
    payload = data[start + n:]
    if len(payload) != header.get("size") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        return None, "corrupt engine (size or sha256 mismatch)", {}
    return payload, "ok", header.get("extra") or {}


class EngineCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir()

    def path(self, key: EngineKey) -> Path:
        return self.root / key.filename()

    def load(self, key: EngineKey) -> tuple[bytes | None, str, dict]:
        """-> (engine bytes or None, reason, extra). Never raises for a bad file: it is a cache miss."""
        p = self.path(key)
        if not p.is_file():
            return None, "not cached", {}
        try:
            data = p.read_bytes()
        except OSError as exc:
            return None, f"unreadable ({exc.strerror})", {}
        return decode_file(data, key)

    def store(self, key: EngineKey, payload: bytes, extra: dict | None = None) -> Path:
        p = self.path(key)
        atomic_write_bytes(p, encode_file(key, payload, extra))
        return p

    def discard(self, key: EngineKey) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass
