"""Model packs written to break the live loop, each written here for real: sizes that ask for terabytes,
files of gigabytes (sparse), symlink loops. Each is refused with one line and exit 2 at start, and refused on a
hot swap while the show plays on; and whatever else goes wrong inside a loop thread is caught, counted
and recovered from."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, external_data_helper, helper

from autoencoded.cli import main
from autoencoded.errors import UserError
from autoencoded.live.engines import open_engine
from autoencoded.live.engines.pack import MAX_PACK_BYTES, META_FILE, hash_files, read_pack
from autoencoded.live.io.sinks import NullSink
from autoencoded.live.io.sources import VideoFileSource
from autoencoded.live.loop import pipeline
from autoencoded.live.loop.framer import Framer
from autoencoded.live.loop.pipeline import Pipeline
from autoencoded.sizes import MAX_SIZE, MAX_Z_DIM

from helpers import tiny_checkpoint, wait_for

REPO = Path(__file__).resolve().parents[1]
W, H = 64, 48
OUT = (96, 72)


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    from autoencoded.export.onnx_export import export_checkpoint

    root = tmp_path_factory.mktemp("hostile-packs")
    ckpt = tiny_checkpoint(root / "tiny.safetensors", W, H)
    return export_checkpoint(ckpt, root / "pack", log=lambda m: None)[0]


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]


def lying_pack(src: Path, out: Path, width: int | None = None, height: int | None = None,
               z_dim: int | None = None) -> Path:
    """A copy of pack `src` whose model.json and ONNX inputs and outputs declare width x height and z_dim,
    while the graphs compute the real ones: onnxruntime opens it (it cannot infer the lie), so only what
    trusts the declared sizes is fooled, as a hand-edited pack would fool it."""
    shutil.copytree(src, out)
    meta = json.loads((out / META_FILE).read_text())
    for role in ("encoder", "decoder"):
        path = out / meta["files"][role]
        model = onnx.load(str(path))
        g = model.graph
        if z_dim and role == "decoder":  # z [N, z_dim] -> its first real dimensions
            real = g.input[0].type.tensor_type.shape.dim[1].dim_value
            _rename(g, "z", "z_real")
            g.initializer.extend([helper.make_tensor("z_from", TensorProto.INT64, [1], [0]),
                                  helper.make_tensor("z_to", TensorProto.INT64, [1], [real]),
                                  helper.make_tensor("z_axis", TensorProto.INT64, [1], [1])])
            g.node.insert(0, helper.make_node("Slice", ["z", "z_from", "z_to", "z_axis"], ["z_real"]))
        if z_dim and role == "encoder":  # the latents through a reshape to their own (runtime) shape
            for name in ("mu", "log_sigma"):
                _rename(g, name, f"{name}_real")
                g.node.extend([helper.make_node("Shape", [f"{name}_real"], [f"{name}_shape"]),
                               helper.make_node("Reshape", [f"{name}_real", f"{name}_shape"], [name])])
        for vi in [*g.input, *g.output]:
            dims = vi.type.tensor_type.shape.dim
            if len(dims) == 4:
                dims[2].dim_value = height or dims[2].dim_value
                dims[3].dim_value = width or dims[3].dim_value
            elif len(dims) == 2 and z_dim:
                dims[1].dim_value = z_dim
        onnx.save(model, str(path))
    meta.update({k: v for k, v in (("width", width), ("height", height), ("z_dim", z_dim)) if v})
    meta["model_hash"] = hash_files(out, meta["files"])
    (out / META_FILE).write_text(json.dumps(meta))
    return out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: "), err
    return err


BOMBS = {"latent": dict(z_dim=10**12), "picture": dict(width=100000, height=100000)}


@pytest.mark.parametrize("kind", BOMBS)
def test_a_memory_bomb_pack_is_refused_at_start_with_one_line(pack, tmp_path, make_video, capsys, kind):
    """Before: z_dim 1e12 was 'internal error: MemoryError' (exit 1); 100000x100000 started, killed the
    source thread with a traceback and exited 0 with 0 frames out."""
    bomb = lying_pack(pack, tmp_path / "bomb", **BOMBS[kind])
    with pytest.raises(UserError, match="out of bounds"):
        read_pack(bomb)
    clip = make_video("in.mp4", n_frames=10, width=160, height=96)
    commands = {"live": ["live", "--model", bomb, "--input", clip, "--output", "null", "--duration", "1",
                         "--osc-port", "0", "--web", "0"],
                "render": ["render", clip, tmp_path / "out.mp4", "--model", bomb],
                "bench": ["bench", "--model", bomb, "--backend", "onnxruntime", "--seconds", "0.05"]}
    for name, args in commands.items():
        assert main([str(a) for a in args]) == 2, name
        err = one_error_line(capsys)
        bound = MAX_Z_DIM if kind == "latent" else MAX_SIZE[0]
        assert "out of bounds" in err and f"at most {bound}" in err, err
    assert not (tmp_path / "out.mp4").exists()


def _frames_flow(sink: NullSink, n: int, what: str) -> None:
    start = sink.frames
    wait_for(lambda: sink.frames >= start + n, what, timeout=60, poll_s=0.02)


def test_a_hot_swap_to_a_bad_pack_is_refused_and_the_show_plays_on(pack, tmp_path, make_video):
    """Before: a swap to z_dim 1e12 killed the engine thread (output frozen, later swaps never happened);
    a swap to 100000x100000 said 'now playing' and killed the source thread."""
    bombs = [lying_pack(pack, tmp_path / kind, **BOMBS[kind]) for kind in BOMBS]
    logs: list[str] = []
    sink = NullSink()
    p = Pipeline(VideoFileSource(make_video("in.mp4", n_frames=30, width=160, height=96)),
                 open_engine(pack, backend="onnxruntime", log=lambda m: None, threads=1), [sink], fps=30, size=OUT,
                 log=logs.append, threads=1)
    p.start()
    try:
        _frames_flow(sink, 5, "the first frames")
        first = p.engine
        for bomb in bombs:
            exc = p.request_model(str(bomb), backend="onnxruntime").exception(timeout=60)
            assert isinstance(exc, UserError) and "out of bounds" in str(exc)
            assert p.engine is first and "out of bounds" in p.stats()["model_error"]
            _frames_flow(sink, 10, "frames after a refused swap")
        # later swaps still happen: a good pack plays
        assert p.request_model(str(pack), backend="onnxruntime").result(timeout=60).startswith("onnxruntime")
        wait_for(lambda: p.engine is not first, "the good pack swapped in", timeout=30, poll_s=0.02)
        _frames_flow(sink, 10, "frames from the swapped-in pack")
        st = p.stats()
        assert st["loop_errors"] == 0 and st["engine_faults"] == 0, st
    finally:
        p.stop()
    assert not any("now playing" in m and "bomb" in m for m in logs)
    assert sum("could not load" in m and "still playing" in m for m in logs) == 2, logs


class BrittleFramer(Framer):
    """The real framer whose calls `first`..`first + count - 1` raise MemoryError: it fits each frame on the
    source thread; a frame that came unfitted is framed afresh on the engine thread, and one that failed
    there too on the sink thread (the input's picture), so the failure reaches each of them."""

    first, count = 20, 30

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.calls = 0

    def _call(self) -> None:
        self.calls += 1
        if self.first <= self.calls < self.first + self.count:
            raise MemoryError("Unable to allocate 27.9 TiB for an array")

    def fit(self, frame):
        self._call()
        return super().fit(frame)

    def framing(self, frame, width, height):
        self._call()
        return super().framing(frame, width, height)


def test_an_exception_in_any_loop_thread_is_caught_counted_and_recovered_from(pack, make_video, monkeypatch):
    logs: list[str] = []
    sink = NullSink()
    monkeypatch.setattr(pipeline, "Framer", BrittleFramer)
    p = Pipeline(VideoFileSource(make_video("in.mp4", n_frames=30, width=160, height=96)),
                 open_engine(pack, backend="onnxruntime", log=lambda m: None, threads=1), [sink], fps=30,
                 size=OUT, log=logs.append, threads=1)
    p.params.set("mix", 0.5)
    p.start()
    try:
        wait_for(lambda: p.framer.calls >= 60, "the failures and after", timeout=60, poll_s=0.02)
        _frames_flow(sink, 20, "frames after the failures")
        st = p.stats()
        # an engine that cannot be swapped in (a latent it cannot even set up) is refused in the engine thread
        hollow = open_engine(pack, backend="onnxruntime", log=lambda m: None, threads=1)
        hollow.z_dim = 10**13
        fut: Future = Future()
        p.swap.deliver(hollow, fut)
        assert isinstance(fut.exception(timeout=30), MemoryError)
        _frames_flow(sink, 10, "frames after a refused swap")
        assert p.request_model(str(pack), backend="onnxruntime").result(timeout=60).startswith("onnxruntime")
        _frames_flow(sink, 10, "frames after a good swap")
    finally:
        p.stop()
    assert st["loop_errors"] > 0 and "MemoryError" in st["last_loop_error"], st
    # the source thread's framing is an optimisation (the engine thread frames again, and a failure there is
    # an engine fault: the input passes through); the sink thread's own failure is the guard's
    assert st["engine_faults"] > 0 and any(m.startswith("sink thread: MemoryError") for m in logs), logs
    assert any("thread: recovered after" in m for m in logs), logs
    assert any("still playing" in m and "MemoryError" in m for m in logs), logs
    assert not any("Traceback" in m for m in logs)


def test_every_loop_thread_has_a_guard(pack, make_video):
    """Every iteration of the source, engine and sink threads runs under a ThreadGuard: a failure in the
    source thread's own bookkeeping (not the source's reads, which are outages) is caught there too."""
    logs: list[str] = []
    sink = NullSink()
    p = Pipeline(VideoFileSource(make_video("in.mp4", n_frames=30, width=160, height=96)),
                 open_engine(pack, backend="onnxruntime", log=lambda m: None, threads=1), [sink], fps=30, size=OUT,
                 log=logs.append, threads=1)
    puts = {"n": 0}
    real_put = p.feed.box.put

    def put(pkt):  # the feed's hand-over fails 15 times, as an allocation would
        puts["n"] += 1
        if 10 <= puts["n"] < 25:
            raise MemoryError("no memory for the packet")
        real_put(pkt)

    p.feed.box.put = put
    p.start()
    try:
        wait_for(lambda: puts["n"] >= 40, "frames after the failures", timeout=60, poll_s=0.02)
        _frames_flow(sink, 10, "frames after the source thread's failures")
    finally:
        p.stop()
    assert p.stats()["loop_errors"] >= 15
    assert any(m.startswith("source thread: MemoryError") for m in logs), logs
    assert any(m.startswith("source thread: recovered after") for m in logs), logs


# ---- files of gigabytes: refused before reading, hashed in blocks ----------------------------------------

def _external(pack: Path, out: Path) -> Path:
    """A copy of `pack` whose encoder keeps its weights in encoder.data (ONNX external data)."""
    shutil.copytree(pack, out)
    enc = onnx.load(str(out / "encoder.onnx"))
    external_data_helper.convert_model_to_external_data(enc, location="encoder.data", size_threshold=0)
    onnx.save(enc, str(out / "encoder.onnx"))
    return out


def _old_model_hash(pack: Path) -> str:
    """model_hash as the format defines it, reading each file whole (the way it was computed before)."""
    digest = hashlib.sha256()
    for role in ("encoder", "decoder"):
        digest.update(role.encode() + b"\0" + (pack / f"{role}.onnx").read_bytes())
        if role == "encoder" and (pack / "encoder.data").exists():  # each file's external data after it
            digest.update(b"encoder.data\0" + (pack / "encoder.data").read_bytes())
    return digest.hexdigest()


def test_hashing_in_blocks_keeps_the_model_hash(pack, tmp_path):
    ext = _external(pack, tmp_path / "ext")
    meta = json.loads((ext / META_FILE).read_text())
    meta["model_hash"] = _old_model_hash(ext)
    (ext / META_FILE).write_text(json.dumps(meta))
    assert read_pack(ext).model_hash == meta["model_hash"]
    assert hash_files(pack, {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}) == _old_model_hash(pack)


PEAK_PROBE = ("import resource, sys\nfrom autoencoded.cli import main\nrc = main(sys.argv[1:])\n"
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(rc)\n")


def _live_peak(model: Path) -> tuple[int, str, int]:
    """live on `model` in a fresh process: (exit code, its one error line, peak RSS in kB)."""
    r = subprocess.run([sys.executable, "-c", PEAK_PROBE, "live", "--model", str(model), "--input", "demo",
                        "--output", "null", "--duration", "1", "--osc-port", "0", "--web", "0"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    *lines, peak_kb = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return r.returncode, lines[0], int(peak_kb)


def test_a_huge_sparse_external_data_file_is_refused_before_reading(pack, tmp_path):
    """Before: a 3 GB sparse external-data file was read whole to hash it (peak RSS 6.5 GB)."""
    ext = _external(pack, tmp_path / "ext")
    with open(ext / "encoder.data", "r+b") as f:
        f.truncate(3 << 30)  # sparse: no disk used
    meta = json.loads((ext / META_FILE).read_text())
    meta.pop("model_hash", None)
    (ext / META_FILE).write_text(json.dumps(meta))
    rc, line, peak_kb = _live_peak(ext)
    assert rc == 2 and line.startswith("error: ") and "encoder.data" in line and "refused before reading" in line
    assert peak_kb < 1.5e6, peak_kb  # kB: nowhere near the 3 GB file


def test_tensors_that_read_more_than_a_pack_holds_are_refused(pack, tmp_path):
    """Every tensor may point at the whole of one external file: what they read together is bounded."""
    ext = _external(pack, tmp_path / "ext")
    data = ext / "encoder.data"
    with open(data, "r+b") as f:
        f.truncate(MAX_PACK_BYTES // 4)  # within the bound alone, and read by many tensors
    enc = onnx.load(str(ext / "encoder.onnx"), load_external_data=False)
    for t in enc.graph.initializer:
        if external_data_helper.uses_external_data(t):  # no length: the tensor reads the whole file
            keep = [(e.key, e.value) for e in t.external_data if e.key == "location"]
            del t.external_data[:]
            for key, value in keep:
                t.external_data.add(key=key, value=value)
    onnx.save(enc, str(ext / "encoder.onnx"))
    with pytest.raises(UserError, match="more than 2 GiB"):
        read_pack(ext)


def test_a_huge_onnx_file_is_refused_before_reading(pack, tmp_path):
    """Before: a 6 GB encoder.onnx gave MemoryError (read whole to hash and parse it)."""
    big = tmp_path / "big"
    shutil.copytree(pack, big)
    with open(big / "encoder.onnx", "r+b") as f:
        f.truncate(6 << 30)
    rc, line, peak_kb = _live_peak(big)
    assert rc == 2 and "encoder.onnx" in line and "6.0 GiB" in line and "refused before reading" in line, line
    assert peak_kb < 1.5e6, peak_kb


def test_a_huge_model_json_is_refused_before_reading(pack, tmp_path):
    big = tmp_path / "big"
    shutil.copytree(pack, big)
    with open(big / META_FILE, "r+b") as f:
        f.truncate(1 << 30)
    with pytest.raises(UserError, match="not a model.json"):
        read_pack(big)


# ---- symlink loops ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["encoder", "external data"])
def test_a_symlink_loop_in_a_pack_is_one_line_in_every_command(pack, tmp_path, make_video, capsys, where):
    """Before: 'internal error: RuntimeError: Symlink loop', exit 1, in live, render and eval."""
    looped = _external(pack, tmp_path / "looped") if where == "external data" else shutil.copytree(
        pack, tmp_path / "looped")
    victim = looped / ("encoder.data" if where == "external data" else "encoder.onnx")
    victim.unlink()
    (looped / "a").symlink_to("b")
    (looped / "b").symlink_to("a")
    victim.symlink_to("a")
    clip = make_video("in.mp4", n_frames=10, width=160, height=96)
    for args in (["live", "--model", looped, "--input", clip, "--output", "null", "--duration", "1",
                  "--osc-port", "0", "--web", "0"],
                 ["render", clip, tmp_path / "out.mp4", "--model", looped],
                 ["eval", looped, clip],
                 ["bench", "--model", looped, "--backend", "onnxruntime", "--seconds", "0.05"]):
        assert main([str(a) for a in args]) == 2, args[0]
        err = one_error_line(capsys)
        assert "cannot be resolved" in err and "ymlink loop" in err, err


def test_one_bound_for_a_latent_and_a_picture():
    """A pack is held to the bounds of the options that set the same sizes: one constant each, not copies."""
    from autoencoded import sizes
    from autoencoded.live.engines import pack as packfmt
    from autoencoded.training import train_cmd

    assert train_cmd.MAX_Z_DIM is sizes.MAX_Z_DIM and packfmt.META_BOUNDS["z_dim"] is sizes.MAX_Z_DIM
    assert (packfmt.META_BOUNDS["width"], packfmt.META_BOUNDS["height"]) == sizes.MAX_SIZE
