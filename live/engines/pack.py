"""The model pack: the exported, runtime-only form of a trained model (written by `autoencoded export`).

    MODEL/encoder.onnx   input "image" float32 N x 3 x H x W in [-1,1] -> "mu", "log_sigma" (N x z_dim)
    MODEL/decoder.onnx   input "z" float32 N x z_dim -> "image" N x 3 x H x W in [-1,1] (tanh)
    MODEL/model.json     {"format": "autoencoded-model", "format_version": 1, "arch", "width", "height",
                          "z_dim", "batch": "dynamic", "normalisation": {"input": "x/127.5-1",
                          "output": "(y+1)*127.5"}, "config": ModelConfig dict, "source_checkpoint",
                          "source_sha256", "model_hash", "training": {...} | null, "files": {...},
                          "opset", "verify": {...} | null, "created", "tool_version"}

The batch axis N is dynamic (1 for live, larger for render); H and W are fixed. model_hash is the
sha256 over the ONNX files (and any external data they use), recomputed on every read: it keys the
TensorRT engine cache, so a stale engine can never match changed files.

Reading is defensive: every problem is a UserError with one line, and external-data paths that
leave the pack (`../`, absolute, symlinks out, symlink loops) are refused before any runtime opens the files.
Every size is bounded before anything is allocated from it: width and height by MAX_SIZE and z_dim by
MAX_Z_DIM (autoencoded.sizes, the bounds of --size and train --z-dim), the files by MAX_PACK_BYTES; files
are hashed in blocks, never read whole for it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import compose, external_data_helper

from autoencoded.documents import parse_json
from autoencoded.errors import UserError, one_line
from autoencoded.posterior import LatentPlan
from autoencoded.sizes import MAX_SIZE, MAX_Z_DIM

FORMAT = "autoencoded-model"
FORMAT_VERSION = 1
META_FILE = "model.json"
ROLES = ("encoder", "decoder")
NORMALISATION = {"input": "x/127.5-1", "output": "(y+1)*127.5"}
# role -> (input names, output names)
FUSED_IN, FUSED_OUT = "enc/image", "dec/image"
IO_NAMES = {"encoder": (["image"], ["mu", "log_sigma"]), "decoder": (["z"], ["image"])}
# the bound on each meta size, read before anything is allocated from it
META_BOUNDS = {"width": MAX_SIZE[0], "height": MAX_SIZE[1], "z_dim": MAX_Z_DIM}
# the ONNX files and their external data together: the graphs are held in memory and handed to the runtimes
# as one protobuf message (the fused graph), which protobuf refuses at 2 GiB
MAX_PACK_BYTES = 2**31 - 1
MAX_META_BYTES = 16 << 20  # model.json is ~10 kB (its training record included)
HASH_BLOCK = 1 << 20


@dataclass
class ModelPack:
    path: Path
    meta: dict
    width: int
    height: int
    z_dim: int
    arch: str
    model_hash: str
    #: which latent entries are learned and at what scale live noise plays them (autoencoded.posterior)
    plan: LatentPlan = field(default_factory=lambda: LatentPlan(0))
    #: role -> ONNX model with any external data already loaded into it (validated, in memory)
    models: dict[str, onnx.ModelProto] = field(repr=False, default_factory=dict)

    def model_bytes(self, role: str) -> bytes:
        return self.models[role].SerializeToString()

    def fused(self) -> onnx.ModelProto:
        """One graph image -> image decoding the mean (encoder's mu wired to the decoder's z), in memory."""
        enc = compose.add_prefix(self.models["encoder"], "enc/")
        dec = compose.add_prefix(self.models["decoder"], "dec/")
        return compose.merge_models(enc, dec, io_map=[("enc/mu", "dec/z")], outputs=[FUSED_OUT])


def is_pack(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / META_FILE).is_file()


def safe_member(pack_dir: Path, name: object, what: str) -> Path:
    """A file name inside the pack: plain relative path, no '..', not absolute, resolving inside it."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise UserError(f"{pack_dir}: {what} has an invalid file name {name!r}")
    p = Path(name)
    if p.is_absolute() or name.startswith(("/", "\\")) or ".." in p.parts or ".." in name.split("\\") \
            or (len(name) > 1 and name[1] == ":"):
        raise UserError(f"{pack_dir}: {what} path {name!r} leaves the model pack (refused)")
    try:
        full = (pack_dir / p).resolve()
        root = pack_dir.resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError before Python 3.13), a dead mount
        raise UserError(f"{pack_dir}: {what} path {name!r} cannot be resolved ({one_line(exc)})") from None
    if full != root and root not in full.parents:
        raise UserError(f"{pack_dir}: {what} path {name!r} resolves outside the model pack (refused)")
    return full


def _hash_file(digest: hashlib._Hash, path: Path) -> None:
    """Feed a file to `digest` in blocks (a pack's files may be gigabytes)."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_BLOCK), b""):
            digest.update(block)


def _file_size(pack_dir: Path, path: Path, what: str) -> int:
    """The size of a regular file of the pack, refused past MAX_PACK_BYTES before it is read."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UserError(f"{pack_dir}: {what} {path.name} is unreadable ({one_line(exc)})") from None
    if size > MAX_PACK_BYTES:
        raise UserError(f"{path}: {what} of {size / 2**30:.1f} GiB, more than a model pack holds "
                        f"({MAX_PACK_BYTES / 2**30:.0f} GiB); refused before reading it")
    return size


def _external_bytes(path: Path, tensor: onnx.TensorProto, info: dict[str, str], size: int) -> int:
    """How many bytes of its external data file one tensor reads (the whole rest of it when no length)."""
    try:
        offset, length = int(info.get("offset") or 0), info.get("length")
        length = size - offset if length is None else int(length)
    except ValueError:
        raise UserError(f"{path}: external data of {tensor.name} has a bad offset or length") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise UserError(f"{path}: external data of {tensor.name} reaches past the end of its file "
                        f"({offset}+{length} of {size} bytes)")
    return length


def _load_onnx(pack_dir: Path, role: str, name: str, digest: hashlib._Hash, budget: list[int]) -> onnx.ModelProto:
    """One ONNX file of the pack with its external data, hashed into `digest`; `budget` holds the bytes the
    pack may still load (MAX_PACK_BYTES across both files), checked before each read."""
    path = safe_member(pack_dir, name, f"{role} file")
    if not path.is_file():
        raise UserError(f"{pack_dir}: {role} file {name} is missing")
    _spend(path, budget, _file_size(pack_dir, path, f"{role} file"))
    data = path.read_bytes()
    digest.update(role.encode() + b"\0" + data)
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf DecodeError and friends: the file is not an ONNX model
        raise UserError(f"{path}: not a valid ONNX file (truncated or corrupt: {one_line(exc)})") from None
    if not model.graph.node or not model.graph.input:
        raise UserError(f"{path}: not a valid ONNX file (empty graph)")
    tensors = list(external_data_helper._get_all_tensors(model))
    external = [t for t in tensors if external_data_helper.uses_external_data(t)]
    locations = set()
    for t in external:
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location")
        target = safe_member(pack_dir, loc, f"external data of {name} ({t.name})")
        if not target.is_file():
            raise UserError(f"{path}: external data file {loc} is missing")
        size = _file_size(pack_dir, target, "external data file")
        _spend(path, budget, _external_bytes(path, t, info, size))  # what loading it will read, per tensor
        locations.add((loc, target))
    for loc, target in sorted(locations):
        digest.update(loc.encode() + b"\0")
        _hash_file(digest, target)
    if external:
        try:
            external_data_helper.load_external_data_for_model(model, str(pack_dir))
        except Exception as exc:
            raise UserError(f"{path}: cannot read its external data ({one_line(exc)})") from None
    return model


def _spend(path: Path, budget: list[int], n: int) -> None:
    budget[0] -= n
    if budget[0] < 0:
        raise UserError(f"{path}: the model pack's ONNX files and their data come to more than "
                        f"{MAX_PACK_BYTES / 2**30:.0f} GiB (what one model can hold); refused before reading them")


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value if d.HasField("dim_value") or d.dim_param else "?"
            for d in vi.type.tensor_type.shape.dim]


def _check_io(path: Path, role: str, model: onnx.ModelProto, width: int, height: int, z_dim: int) -> None:
    init_names = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]
    want_in, want_out = IO_NAMES[role]
    got_in, got_out = [i.name for i in inputs], [o.name for o in model.graph.output]
    if got_in != want_in or sorted(got_out) != sorted(want_out):
        raise UserError(f"{path}: {role} has inputs {got_in} and outputs {got_out}, "
                        f"expected {want_in} -> {want_out}")
    image = inputs[0] if role == "encoder" else model.graph.output[0]
    dims = _dims(image)
    if len(dims) != 4 or dims[1:] != [3, height, width]:
        raise UserError(f"{path}: model.json says {width}x{height} but the {role} image is "
                        f"{'x'.join(map(str, dims))} (N x 3 x H x W)")
    latents = list(model.graph.output) if role == "encoder" else inputs
    for vi in latents:
        d = _dims(vi)
        if len(d) != 2 or d[1] != z_dim:
            raise UserError(f"{path}: model.json says z_dim {z_dim} but {role} {vi.name} is "
                            f"{'x'.join(map(str, d))}")


def read_meta(pack_dir: str | os.PathLike) -> dict:
    pack_dir = Path(pack_dir)
    meta_path = pack_dir / META_FILE
    if not pack_dir.is_dir():
        raise UserError(f"{pack_dir}: no such model pack folder")
    if not meta_path.is_file():
        raise UserError(f"{pack_dir}: not a model pack (no {META_FILE}); create one with `autoencoded export`")
    try:
        if meta_path.stat().st_size > MAX_META_BYTES:
            raise UserError(f"{meta_path}: {meta_path.stat().st_size / 2**20:.0f} MiB, not a model.json "
                            f"(at most {MAX_META_BYTES >> 20} MiB); refused before reading it")
        meta = parse_json(meta_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise UserError(f"{meta_path}: unreadable ({one_line(exc)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{meta_path}: not an autoencoded model pack (format is not {FORMAT!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise UserError(f"{meta_path}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise UserError(f"{meta_path}: model pack format version {version} is newer than this tool "
                        f"(reads up to {FORMAT_VERSION}); upgrade autoencoded")
    for key, top in META_BOUNDS.items():
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise UserError(f"{meta_path}: missing or bad {key!r}")
        if value > top:  # checked before anything is sized from it (a frame, a latent, a buffer)
            raise UserError(f"{meta_path}: {key} {value} is out of bounds (at most {top}); refused")
    if not isinstance(meta.get("files"), dict) or any(r not in meta["files"] for r in ROLES):
        raise UserError(f"{meta_path}: 'files' must name the encoder and decoder ONNX files")
    if meta.get("normalisation", NORMALISATION) != NORMALISATION:
        raise UserError(f"{meta_path}: unsupported normalisation {meta.get('normalisation')!r}")
    return meta


def _layout_record(meta: dict) -> dict | None:
    """The "latent" record of a pack exported before it had one: a model with a layout learned its first
    config.z_dim entries and computed the rest, which noise must not move (they are the input's luma)."""
    config = meta.get("config")
    if isinstance(config, dict) and config.get("layout") is True and isinstance(config.get("z_dim"), int):
        return {"learned": config["z_dim"]}
    return None


def read_pack(pack_dir: str | os.PathLike) -> ModelPack:
    """Validate a model pack folder and load its graphs. Every problem is one UserError line."""
    pack_dir = Path(pack_dir)
    meta = read_meta(pack_dir)
    digest = hashlib.sha256()
    budget = [MAX_PACK_BYTES]
    models = {role: _load_onnx(pack_dir, role, meta["files"][role], digest, budget) for role in ROLES}
    w, h, z = meta["width"], meta["height"], meta["z_dim"]
    for role in ROLES:
        _check_io(pack_dir / meta["files"][role], role, models[role], w, h, z)
    model_hash = digest.hexdigest()
    try:
        plan = LatentPlan.from_record(meta.get("latent", _layout_record(meta)), z)
    except ValueError as exc:
        raise UserError(f"{pack_dir / META_FILE}: {exc} (refused)") from None
    recorded = meta.get("model_hash")
    if recorded is not None and recorded != model_hash:
        raise UserError(f"{pack_dir}: ONNX files do not match model_hash in {META_FILE} "
                        "(changed after export; export again)")
    return ModelPack(path=pack_dir, meta=meta, width=w, height=h, z_dim=z, arch=str(meta.get("arch", "?")),
                     model_hash=model_hash, plan=plan, models=models)


def hash_files(pack_dir: Path, files: dict[str, str]) -> str:
    """model_hash of self-contained ONNX files, as read_pack computes it (used by export)."""
    digest = hashlib.sha256()
    for role in ROLES:
        digest.update(role.encode() + b"\0")
        _hash_file(digest, pack_dir / files[role])
    return digest.hexdigest()
