"""Memory: the bank of the film's latents in a pack (export, the memory command, the old-pack path, the
refusals) and the `memory` control (hysteresis, the blend, its place among the latent effects, render).

Real packs: a tiny lite model exported by the real `autoencoded export` from a run whose config.json names a
real dataset; latents from ONNX Runtime; renders are real video files read back."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from autoencoded.errors import UserError
from autoencoded.live.control.latent import LatentFX
from autoencoded.live.control.memory import K, Recall, weights
from autoencoded.live.control.params import Params
from autoencoded.live.engines import open_engine
from autoencoded.live.engines.memory_bank import MEMORY_FILE, read_bank
from autoencoded.live.engines.memory_index import NearestIndex, exact_search, faiss_available
from autoencoded.live.engines.pack import read_meta
from autoencoded.live.loop.model_pass import encode_effects_decode
from autoencoded.training.config import TrainConfig
from autoencoded.training.data import open_dataset

from helpers import cli, make_dataset, read_video, tiny_checkpoint

W, H, N = 64, 48, 24
Z = 256 + (W // 2) * (H // 2)  # the lite preset's latent at 64x48: the learned code and the layout at 32x24


def tiny_run(root: Path, dataset: Path | None) -> Path:
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    tiny_checkpoint(run / "checkpoints" / "step-0000001.safetensors", W, H, he_init=True)
    if dataset is not None:
        TrainConfig(dataset=str(dataset), out=str(run), width=W, height=H).save(run / "config.json")
    return run


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    """(a pack exported with its run's dataset, that dataset, the same pack as made before memory banks)."""
    root = tmp_path_factory.mktemp("memory")
    ds = make_dataset(root / "ds", n=N, width=W, height=H)
    assert cli("export", tiny_run(root, ds), "-o", root / "with") == 0
    old = root / "old"
    shutil.copytree(root / "with", old)
    meta = json.loads((old / "model.json").read_text())
    del meta["memory"]
    (old / "model.json").write_text(json.dumps(meta))
    (old / MEMORY_FILE).unlink()
    return root / "with", ds, old


def ort(pack, memory=True, lines=None):
    return open_engine(pack, backend="onnxruntime", log=(lines if lines is not None else []).append, memory=memory)


def test_export_writes_the_bank_of_the_runs_dataset(packs):
    pack, ds, _ = packs
    info = read_meta(pack)["memory"]
    assert info["source"] == {"footage": str(ds.resolve()), "frames": N}
    assert info["reduction"]["method"] == "dedupe" and info["reduction"]["frames"] == N
    assert 1 <= info["count"] == info["reduction"]["kept"] <= N and info["dtype"] == "float16"
    bank = read_bank(pack, read_meta(pack), Z)
    # the rows are the means the pack's own encoder gives those frames, in the film's order, first frame first
    with ort(pack, memory=False) as engine:
        mu, _ = engine.encode(open_dataset(ds).batch(bank.frames))
    assert bank.frames[0] == 0 and np.all(np.diff(bank.frames) > 0)
    np.testing.assert_allclose(bank.latents, mu, atol=2e-3)  # float16 storage
    # dedupe: every kept frame is farther than the threshold from the one kept before it
    assert np.all(np.linalg.norm(np.diff(mu, axis=0), axis=1) > 0.999 * info["reduction"]["threshold"])


def test_export_without_the_runs_dataset_says_so_in_one_line(tmp_path, capsys):
    assert cli("export", tiny_run(tmp_path, None), "-o", tmp_path / "pack") == 0
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("memory:")]
    assert len(said) == 1 and "no memory bank" in said[0] and "autoencoded memory" in said[0]
    assert "memory" not in read_meta(tmp_path / "pack") and not (tmp_path / "pack" / MEMORY_FILE).exists()


def test_the_memory_command_gives_an_old_pack_a_bank_and_replaces_it_on_request(packs, tmp_path, capsys):
    _, ds, old = packs
    pack = tmp_path / "pack"
    shutil.copytree(old, pack)
    assert cli("memory", pack, ds) == 0
    first = read_meta(pack)["memory"]
    assert first["source"]["frames"] == N and read_bank(pack, read_meta(pack), Z) is not None
    capsys.readouterr()
    assert cli("memory", pack, ds) == 2  # a bank is there: replaced only on request
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--overwrite" in err
    assert cli("memory", pack, ds, "--overwrite") == 0
    assert read_meta(pack)["memory"]["sha256"] == first["sha256"]  # the same frames, the same bank
    assert cli("memory", pack, tmp_path / "nothing") == 2


def test_the_pack_budget_bounds_the_bank_in_the_memory_command_and_export(packs, tmp_path, capsys):
    """--max-pack-mb: the whole pack within it (the bank keeps fewer frames); below the ONNX files themselves,
    memory refuses in one line and export writes the pack without a bank, saying so."""
    _, ds, old = packs
    pack = tmp_path / "pack"
    shutil.copytree(old, pack)
    others = sum(p.stat().st_size for p in pack.iterdir())
    assert cli("memory", pack, ds) == 0
    full = read_meta(pack)["memory"]["count"]
    assert full > 5
    budget = others + (64 << 10) + 5 * (Z * 2 + 4)  # room for five rows beside the ONNX files and model.json
    assert cli("memory", pack, ds, "--overwrite", "--max-pack-mb", budget / 1e6) == 0
    info = read_meta(pack)["memory"]
    assert info["count"] <= 5 and info["reduction"]["budget_bytes"] == budget
    assert sum(p.stat().st_size for p in pack.iterdir()) <= budget
    assert len(read_bank(pack, read_meta(pack), Z).latents) == info["count"]
    capsys.readouterr()
    assert cli("memory", pack, ds, "--overwrite", "--max-pack-mb", 0.01) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no room for a memory bank within 0.01 MB" in err
    assert read_meta(pack)["memory"]["count"] == info["count"]  # the bank it had is still there
    assert cli("memory", pack, ds, "--overwrite", "--max-pack-mb", 41) == 2  # past the most a pack may hold
    run = tiny_run(tmp_path / "again", ds)
    assert cli("export", run, "-o", tmp_path / "small", "--max-pack-mb", 0.01) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("memory:")]
    assert any("no room" in line and "no memory bank" in line for line in said)
    assert "memory" not in read_meta(tmp_path / "small") and not (tmp_path / "small" / MEMORY_FILE).exists()


def test_a_pack_without_a_bank_plays_and_memory_does_nothing(packs):
    _, ds, old = packs
    lines: list[str] = []
    frames = open_dataset(ds).batch(np.arange(6))
    with ort(old, lines=lines) as engine:
        assert engine.memory is None
        said = [line for line in lines if line.startswith("memory:")]
        assert len(said) == 1 and "no memory bank" in said[0]
        at0 = encode_effects_decode(engine, LatentFX(Z), frames, Params(memory=0.0))
        at1 = encode_effects_decode(engine, LatentFX(Z), frames, Params(memory=1.0))
    assert np.array_equal(at0, at1)


def doctored(pack: Path, out: Path, latents: np.ndarray) -> Path:
    """A copy of `pack` whose bank holds `latents`, with model.json's record matching the file."""
    shutil.copytree(pack, out)
    data = save({"latents": latents, "frames": np.arange(len(latents), dtype=np.int32)})
    (out / MEMORY_FILE).write_bytes(data)
    meta = json.loads((out / "model.json").read_text())
    meta["memory"].update(count=len(latents), sha256=hashlib.sha256(data).hexdigest())
    (out / "model.json").write_text(json.dumps(meta))
    return out


@pytest.mark.parametrize("kind, why", [("nan", "NaN or Inf"), ("empty", "empty"), ("dim", f"latent size is {Z}")])
def test_a_broken_bank_is_refused_in_one_line_and_the_model_plays(packs, tmp_path, kind, why):
    pack, _, _ = packs
    good = read_bank(pack, read_meta(pack), Z).latents.astype(np.float16)
    latents = {"nan": np.where(np.arange(len(good))[:, None] == 1, np.float16(np.nan), good),
               "empty": np.zeros((0, Z), np.float16), "dim": good[:, :64].copy()}[kind]
    bad = doctored(pack, tmp_path / kind, latents)
    with pytest.raises(UserError) as exc:
        read_bank(bad, read_meta(bad), Z)
    assert why in str(exc.value) and "\n" not in str(exc.value)
    lines: list[str] = []
    with ort(bad, lines=lines) as engine:
        assert engine.memory is None
        assert [line for line in lines if line.startswith("memory:")] == [f"memory: {exc.value}; /memory does nothing"]
        assert encode_effects_decode(engine, LatentFX(Z), np.zeros((1, H, W, 3), np.uint8), Params(memory=1.0)).shape == (1, H, W, 3)


def test_a_bank_changed_after_model_json_is_refused(packs, tmp_path):
    pack, _, _ = packs
    bad = tmp_path / "changed"
    shutil.copytree(pack, bad)
    data = bytearray((bad / MEMORY_FILE).read_bytes())
    data[-1] ^= 0xFF
    (bad / MEMORY_FILE).write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match model.json"):
        read_bank(bad, read_meta(bad), Z)


def test_a_still_input_gives_a_still_memory(packs):
    pack, ds, _ = packs
    frames = open_dataset(ds).batch(np.arange(N))
    with ort(pack) as engine:
        recall = Recall(engine.memory)
        mu, _ = engine.encode(frames)
        first = recall(mu[5]).copy()
        for _ in range(5):  # the same input: the same remembered latent, bit for bit, and no new lookup
            assert np.array_equal(recall(mu[5].copy()), first)
        assert recall.lookups == 1
        # an input that barely moves (well inside the radius) keeps the memory as it is
        jitter = np.random.default_rng(0).standard_normal(Z).astype(np.float32)
        jitter *= 0.3 * recall.radius / np.linalg.norm(jitter)
        assert np.array_equal(recall(mu[5] + jitter), first) and recall.lookups == 1
        # one that moves to another frame of the film is looked up again
        far = int(np.argmax(np.linalg.norm(mu - mu[5], axis=1)))
        assert np.linalg.norm(mu[far] - mu[5]) > recall.radius
        assert not np.array_equal(recall(mu[far]), first) and recall.lookups == 2
        # through the whole render path: a still picture at memory 1 comes out the same every frame
        fx = LatentFX(Z)
        outs = [encode_effects_decode(engine, fx, frames[5:6], Params(memory=1.0)) for _ in range(4)]
    assert all(np.array_equal(o, outs[0]) for o in outs)
    assert fx.recall.lookups == 1


def test_memory_blends_in_latent_space_and_recalls_the_films_latents(packs):
    pack, ds, _ = packs
    frames = open_dataset(ds).batch(np.arange(N))
    with ort(pack) as engine:
        bank = engine.memory
        mu, log_sigma = engine.encode(frames[3:4])
        remembered = Recall(bank)(mu[0])
        fx = {m: LatentFX(Z) for m in (0.5, 1.0)}
        for f in fx.values():
            f.use_memory(bank)
        z1 = fx[1.0](mu, log_sigma, Params(memory=1.0))[0]
        z5 = fx[0.5](mu, log_sigma, Params(memory=0.5))[0]
        assert np.array_equal(z1, remembered)
        np.testing.assert_allclose(z5, 0.5 * mu[0] + 0.5 * remembered, atol=1e-6)
        # the remembered latent is a weighted mix of the K nearest film latents (by direction)
        d2, idx = bank.search(mu[0], K + 1)
        w = weights(d2)
        np.testing.assert_allclose(remembered, (w[:, None] * bank.latents[idx[:K]]).sum(0), atol=1e-5)
        # a frame of the film is remembered as itself, nearly
        own = engine.encode(open_dataset(ds).batch(bank.frames[:1]))[0][0]
        np.testing.assert_allclose(Recall(bank)(own), bank.latents[0], atol=0.05)


def test_the_weights_are_smooth_at_the_edge_of_the_k_nearest():
    w = weights(np.array([1.0, 1.01, 1.02, 1.03, 1.03]))
    assert w.shape == (K,) and w.sum() == pytest.approx(1.0) and w[-1] == 0.0  # about to leave: weight 0
    assert np.all(np.diff(w) <= 0)  # nearer weighs more
    assert weights(np.array([0.0, 2.0, 3.0]))[0] == pytest.approx(1.0)  # the film's own frame: itself
    assert np.allclose(weights(np.ones(K + 1)), 1.0 / K)  # all alike
    assert weights(np.array([4.0])).tolist() == [1.0]  # a bank of one


def test_memory_composes_with_noise_freeze_and_cues(packs):
    pack, ds, _ = packs
    frames = open_dataset(ds).batch(np.arange(N))
    with ort(pack) as engine:
        mu, log_sigma = engine.encode(frames)
        remembered = Recall(engine.memory)(mu[0])
        fx = LatentFX(Z)
        fx.use_memory(engine.memory)
        # noise dreams around the remembered latent: its noise added to it
        z = fx(mu[:1], log_sigma[:1], Params(memory=1.0, noise=1.0, noise_max=2.0))[0]
        eps = fx._eps
        np.testing.assert_allclose(z, remembered + 2.0 * np.exp(log_sigma[0]) * eps, atol=1e-5)
        # freeze holds what memory gave; the input moves on underneath
        held = fx(mu[:1], log_sigma[:1], Params(memory=1.0, freeze=True))[0]
        assert np.array_equal(fx(mu[20:21], log_sigma[20:21], Params(memory=1.0, freeze=True))[0], held)
        # a cue stores the remembered latent; recalled at memory 0 it brings it back
        fx = LatentFX(Z)
        fx.use_memory(engine.memory)
        stored = fx(mu[:1], log_sigma[:1], Params(memory=1.0, cue_store=(2,)))[0]
        assert np.array_equal(fx.cues[2], stored) and np.array_equal(stored, remembered)
        back = fx(mu[20:21], log_sigma[20:21], Params(cue_recall=2, cue_mix=1.0))[0]
        assert np.array_equal(back, remembered)


def test_faiss_search_finds_what_exact_search_finds():
    if not faiss_available():
        pytest.skip("faiss-cpu is not installed (pip install 'autoencoded[memory]')")
    rng = np.random.default_rng(0)
    walk = np.tanh(np.cumsum(rng.standard_normal((6000, 32)) * 0.05, axis=0) + rng.standard_normal(32)).astype(np.float32)
    approx = NearestIndex(walk, exact_max=1000)
    assert approx.kind.startswith("faiss IVF")
    norms = np.einsum("ij,ij->i", walk, walk)
    queries = walk[rng.integers(0, len(walk), 50)] + rng.standard_normal((50, 32)).astype(np.float32) * 0.01
    hits = 0
    for q in queries:
        d2, idx = approx.search(q, 5)
        e2, eidx = exact_search(walk, norms, q, 5)
        hits += len(set(idx.tolist()) & set(eidx.tolist()))
        np.testing.assert_allclose(d2[0], e2[0], rtol=1e-3, atol=1e-4)
    assert hits / (5 * len(queries)) >= 0.95


def test_render_memory_0_is_bit_identical_and_memory_1_is_not(packs, make_video, tmp_path):
    pack, _, old = packs
    clip = make_video("clip.mp4", n_frames=10, width=W * 2, height=H * 2)
    outs = {}
    for name, extra in (("none", ()), ("m0", ("--memory", "0")), ("m1", ("--memory", "1"))):
        out = tmp_path / f"{name}.mkv"
        assert cli("render", clip, out, "--model", pack, "--backend", "onnxruntime", *extra) == 0
        outs[name] = np.stack(read_video(out))
    assert np.array_equal(outs["none"], outs["m0"])
    assert np.abs(outs["m1"].astype(int) - outs["m0"].astype(int)).mean() > 1.0
    # asking an old pack for memory is one line and exit 2, and no file
    assert cli("render", clip, tmp_path / "old.mkv", "--model", old, "--memory", "1") == 2
    assert not (tmp_path / "old.mkv").exists()


def test_osc_memory_plays_the_films_memory_in_the_running_loop(tmp_path):
    """The shipped demo pack (with its bank), a still picture in, the real OSC server: /memory 1 changes the
    output while frames keep coming, and the still picture then gives a still memory."""
    import cv2

    from autoencoded.live.control.params import ParamStore
    from autoencoded.live.control.surface import ControlSurface
    from autoencoded.live.io.sinks import NullSink
    from autoencoded.live.io.sources import ImageFolderSource
    from autoencoded.live.loop.pipeline import Pipeline

    from helpers import msg, sender, synthetic_frame, wait_for

    pictures = tmp_path / "still"
    pictures.mkdir()
    cv2.imwrite(str(pictures / "a.png"), synthetic_frame(3, 320, 180))
    store, lines, null = ParamStore(), [], NullSink()
    engine = open_engine(None, backend="onnxruntime", log=lines.append, memory=True)
    assert engine.memory is not None, lines
    assert any(line.startswith(f"memory: {len(engine.memory.latents)} frames") for line in lines), lines
    pipeline = Pipeline(ImageFolderSource(pictures, fps=15), engine, [null], params=store, fps=15,
                        size=(256, 144), log=lines.append)
    surface = ControlSurface(store, osc_port=0, log=lines.append)
    with pipeline:
        surface.start()
        try:
            wait_for(lambda: null.frames >= 3, "output frames")
            before = null.last.copy()
            s = sender()
            s.sendto(msg("/memory", 1.0), ("127.0.0.1", surface.osc.port))
            s.close()
            wait_for(lambda: store.peek().memory == 1.0, "/memory in the store")
            wait_for(lambda: np.abs(null.last.astype(int) - before.astype(int)).mean() > 3.0, "the output to change")
            # the loop goes on: more frames, and a still input keeps a still memory
            count = null.frames
            wait_for(lambda: null.frames >= count + 3, "frames after the change")
            remembered = null.last.copy()
            wait_for(lambda: null.frames >= count + 6, "more frames")
            assert np.array_equal(null.last, remembered)
        finally:
            surface.stop()
    assert pipeline.stats()["engine_faults"] == 0


def test_a_bank_too_big_for_the_pack_budget_is_deduplicated_harder(packs):
    from autoencoded.export.memory_build import dedupe, film_step, reduce
    from autoencoded.live.control.memory import RADIUS
    from autoencoded.live.engines.memory_bank import rows_within

    pack, _, _ = packs
    rng = np.random.default_rng(0)
    mu = np.tanh(np.cumsum(rng.standard_normal((2000, 16)) * 0.05, axis=0)).astype(np.float32)
    step = film_step(mu)
    keep, threshold = reduce(mu, step, limit=10**6)
    assert threshold == RADIUS * step and np.array_equal(keep, dedupe(mu, threshold)) and len(keep) > 300
    small, harder = reduce(mu, step, limit=300)
    assert len(small) <= 300 and harder > threshold and small[0] == 0
    # the bank keeps as many frames as fit: a threshold 2% lower would keep too many
    assert len(dedupe(mu, harder * 0.98)) > 300 and len(small) > 250
    # the budget counts the pack's other files: room for exactly 10 rows leaves 10
    others = sum(p.stat().st_size for p in pack.iterdir() if p.name != MEMORY_FILE)
    assert rows_within(pack, Z, budget=others + (64 << 10) + 10 * (Z * 2 + 4)) == 10
