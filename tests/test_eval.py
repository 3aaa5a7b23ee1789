"""`autoencoded eval` and the picture figures: real packs, real ONNX Runtime sessions, real video files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from autoencoded import metrics
from autoencoded.cli import main
from autoencoded.export.onnx_export import random_pack, write_pack
from autoencoded.training.model import AutoEncoder, ModelConfig

SMALL = dict(width=64, height=48, enc_channels=(8, 16, 16, 32), dec_channels=(32, 16, 16, 8),
             disc_channels=(8, 16, 16, 32), bottleneck_channels=8, z_dim=16)


def cli(*args) -> int:
    return main([str(a) for a in args])


def smooth_frame(i: int, width: int, height: int) -> np.ndarray:
    """A BGR frame of soft colour fields that drift with i: what a thumbnail reconstructs well."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    b = 128 + 100 * np.sin(xx / width * 3.0 + i * 0.2)
    g = 128 + 100 * np.cos(yy / height * 2.0 - i * 0.1)
    r = 128 + 80 * np.sin((xx + yy) / (width + height) * 4.0 + i * 0.15)
    return np.stack([b, g, r], axis=-1).clip(0, 255).astype(np.uint8)


def tinted_frame(colour: tuple[int, int, int]):
    """Frames near one BGR colour, with a little texture: a training film with a one-colour palette."""
    def make(i: int, width: int, height: int) -> np.ndarray:
        rng = np.random.default_rng(i)
        base = np.array(colour, np.float32)[None, None, :]
        return (base + rng.normal(0, 6, (height, width, 3))).clip(0, 255).astype(np.uint8)
    return make


def painter_pack(out: Path, rgb: tuple[int, int, int], palette: dict | None) -> Path:
    """A pack whose decoder paints every frame one colour: its last convolution is zero, its bias the colour."""
    cfg = ModelConfig.preset("lite", **SMALL)
    model = AutoEncoder(cfg).eval()
    last = model.decoder.deconvs[-1][1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.atanh(torch.tensor(rgb, dtype=torch.float32) / 127.5 - 1.0))
    write_pack(model, cfg, out, palette=palette)
    return out


def palette_of(frames_bgr: list[np.ndarray]) -> dict:
    rgb = np.stack([f[..., ::-1] for f in frames_bgr])
    h = metrics.histogram(rgb)
    return {"bins_per_channel": metrics.HIST_BINS, "histogram": h.tolist(), "frames": len(rgb)}


def test_metrics_on_known_images():
    a = np.full((48, 64, 3), 100, np.uint8)
    assert metrics.compare(a, a)["psnr"] == math.inf and metrics.compare(a, a)["ssim"] == pytest.approx(1.0)
    b = a.copy()
    b[...] = 110  # error 10 everywhere: PSNR = 10 log10(255^2 / 100)
    assert metrics.compare(a, b)["psnr"] == pytest.approx(10 * math.log10(255**2 / 100))
    # pooled MSE, not a mean of per-frame PSNRs: one perfect frame does not make the pair perfect
    s = metrics.Score()
    s.add(np.stack([a, a]), np.stack([a, b]))
    assert s.psnr == pytest.approx(10 * math.log10(255**2 / 50))
    h = metrics.histogram(a)
    assert h.sum() == pytest.approx(1.0) and metrics.bhattacharyya(h, h) == pytest.approx(0.0, abs=1e-7)
    red = np.zeros_like(a)
    red[..., 0] = 255
    assert metrics.bhattacharyya(h, metrics.histogram(red)) == pytest.approx(1.0)
    moving = np.stack([a, b, a])
    assert metrics.motion(moving) == pytest.approx(10.0)


def test_eval_scores_a_real_pack_on_a_video_and_a_dataset(tmp_path, make_video, capsys):
    pack = tmp_path / "pack"
    random_pack("lite", pack, width=64, height=48)
    clip = make_video("clip.mp4", n_frames=20, width=128, height=96, frame_fn=smooth_frame)
    ds = tmp_path / "ds"
    assert cli("prepare", clip, "-o", ds, "--size", "64x48") == 0
    capsys.readouterr()
    report = tmp_path / "eval.json"
    assert cli("eval", pack, clip, ds, "--json", report) == 0
    out = capsys.readouterr().out
    assert "thumbnail 16x9" in out and "gaussian blur sigma 4" in out and "model - thumbnail" in out
    doc = json.loads(report.read_text())
    assert [r["frames"] for r in doc["results"]] == [20, 20]
    for r in doc["results"]:
        assert set(r["scores"]) == {"model", "thumbnail 16x9", "gaussian blur sigma 4"}
        assert all(math.isfinite(s["psnr_db"]) and 0 < s["ssim"] <= 1 for s in r["scores"].values())
        assert r["motion"]["inputs"] > 0
    # the same frames scored the same way, whether read from the video or from its prepared dataset
    a, b = (r["scores"]["thumbnail 16x9"]["psnr_db"] for r in doc["results"])
    assert a == pytest.approx(b, abs=0.05)


def test_an_untrained_model_scores_below_the_thumbnail(tmp_path, make_video):
    pack = tmp_path / "pack"
    random_pack("lite", pack, width=64, height=48)
    clip = make_video("clip.mp4", n_frames=12, width=64, height=48, frame_fn=smooth_frame)
    report = tmp_path / "eval.json"
    assert cli("eval", pack, clip, "--json", report) == 0
    r = json.loads(report.read_text())["results"][0]
    assert r["scores"]["model"]["psnr_db"] < r["scores"]["thumbnail 16x9"]["psnr_db"] - 3
    assert r["psnr_minus_thumb_db"] < -3


def test_palette_figure_moves_the_right_way_for_one_colour_models(tmp_path, make_video):
    # the "training film" is all teal (BGR 160, 140, 20); the footage evaluated is colourful and foreign
    teal_bgr = (160, 140, 20)
    training = [tinted_frame(teal_bgr)(i, 64, 48) for i in range(8)]
    palette = palette_of(training)
    clip = make_video("foreign.mp4", n_frames=10, width=64, height=48, frame_fn=smooth_frame)
    faithful = painter_pack(tmp_path / "teal", teal_bgr[::-1], palette)
    wrong = painter_pack(tmp_path / "magenta", (250, 10, 240), palette)
    results = {}
    for name, pack in (("teal", faithful), ("magenta", wrong)):
        report = tmp_path / f"{name}.json"
        assert cli("eval", pack, clip, "--json", report) == 0
        results[name] = json.loads(report.read_text())["results"][0]
    teal, magenta = results["teal"]["palette"], results["magenta"]["palette"]
    assert teal["inputs_to_training"] == pytest.approx(magenta["inputs_to_training"])
    assert teal["outputs_to_training"] < teal["inputs_to_training"] and teal["transfer"]
    assert magenta["outputs_to_training"] > magenta["inputs_to_training"] and not magenta["transfer"]
    # a model that paints one colour does not follow its input
    assert results["teal"]["motion"]["outputs"] == pytest.approx(0.0, abs=0.01)


def test_motion_ratio_is_shown_beside_copies_that_follow_every_frame(tmp_path, make_video, capsys):
    # the same model on two clips that move equally in grey levels: a fine checker that shifts by a cell each
    # frame (change a low-pass copy cannot show) and a large block that slides (change it keeps)
    def checker(i: int, width: int, height: int) -> np.ndarray:
        yy, xx = np.mgrid[0:height, 0:width]
        return np.repeat((((xx + i * 2) // 2 + yy // 2) % 2 * 255).astype(np.uint8)[..., None], 3, axis=-1)

    def block(i: int, width: int, height: int) -> np.ndarray:
        f = np.zeros((height, width, 3), np.uint8)
        f[8:40, (4 * i) % 32:(4 * i) % 32 + 32] = 255
        return f

    pack = tmp_path / "pack"
    random_pack("lite", pack, width=64, height=48)
    # lossless FFV1, so that the codec does not smooth the checker before the model sees it
    clips = [make_video(f"{fn.__name__}.avi", n_frames=12, width=64, height=48, fourcc="FFV1", frame_fn=fn)
             for fn in (checker, block)]
    report = tmp_path / "eval.json"
    assert cli("eval", pack, *clips, "--json", report) == 0
    assert "copies that follow every frame at their sharpness: thumbnail 16x9" in capsys.readouterr().out
    fine, coarse = (r["motion"] for r in json.loads(report.read_text())["results"])
    for m in (fine, coarse):
        assert set(m["baseline_ratios"]) == {"thumbnail 16x9", "gaussian blur sigma 4"}
        assert m["ratio"] == pytest.approx(m["outputs"] / m["inputs"])
    # low-pass copies of the checker hardly move although they follow every frame (measured: 0.00 and 0.004);
    # of the block they keep all of its change (1.0: a sliding edge changes as much blurred as sharp)
    for name in ("thumbnail 16x9", "gaussian blur sigma 4"):
        assert fine["baseline_ratios"][name] < 0.1
        assert coarse["baseline_ratios"][name] > 0.5


def test_eval_bad_input_is_one_line(tmp_path, capsys):
    pack = tmp_path / "pack"
    random_pack("lite", pack, width=64, height=48)
    assert cli("eval", pack, tmp_path / "missing.mp4") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.mp4" in err
    (tmp_path / "folder").mkdir()
    assert cli("eval", pack, tmp_path / "folder") == 2
    assert cli("eval", tmp_path / "nope", tmp_path / "folder") == 2
