"""`autoencoded eval` and the picture figures: real packs, real ONNX Runtime sessions, real video files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from autoencoded import metrics
from autoencoded.cli import main
from autoencoded.export.onnx_export import random_pack, write_pack
from autoencoded.training.model import AutoEncoder, ModelConfig

SMALL = dict(width=64, height=48, enc_channels=(8, 16, 16, 32), dec_channels=(32, 16, 16, 8),
             disc_channels=(8, 16, 16, 32), bottleneck_channels=8, z_dim=16, latent_channels=0, layout=True,
             layout_scale=8, noise_scale=1.0)  # the FC code beside the layout (lite before its spatial code)


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
    """A palette record as the trainer writes it, of these frames."""
    mean, cov = metrics.lab_gaussian(np.stack([f[..., ::-1] for f in frames_bgr]))
    return {"lab_mean": mean.tolist(), "lab_cov": cov.tolist(), "frames": len(frames_bgr)}


class Flatten(nn.Module):
    """An encoder whose mean is the picture itself (z = every input value)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = x.flatten(1)
        return z, torch.zeros_like(z)


class Unflatten(nn.Module):
    def __init__(self, width: int, height: int) -> None:
        super().__init__()
        self.shape = (3, height, width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.reshape(-1, *self.shape)


def identity_pack(out: Path, palette: dict | None, width: int = 32, height: int = 32) -> Path:
    """A pack whose decoder gives back what its encoder saw (the latent is the picture): the ideal of
    structure, and a model that leaves the palette alone. Small, as a pack's latent has at most 4096 values."""
    cfg = ModelConfig.preset("lite", **{**SMALL, "width": width, "height": height, "z_dim": 3 * width * height,
                                          "layout": False})
    model = AutoEncoder(cfg)
    model.encoder, model.decoder = Flatten(), Unflatten(width, height)
    write_pack(model, cfg, out, palette=palette)
    return out


def grey_frame(i: int, width: int, height: int) -> np.ndarray:
    """A grey (R = G = B) frame with soft moving shapes: footage without colour."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    v = 128 + 90 * np.sin(xx / width * 4.0 + i * 0.2) * np.cos(yy / height * 3.0 - i * 0.1)
    return np.repeat(v.clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def eval_json(tmp_path: Path, pack: Path, *footage, name: str = "eval") -> list[dict]:
    report = tmp_path / f"{name}.json"
    assert cli("eval", pack, *footage, "--json", report) == 0
    return json.loads(report.read_text())["results"]


# ---- the figures on known pictures ------------------------------------------------------------------------

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
    moving = np.stack([a, b, a])
    assert metrics.motion(moving) == pytest.approx(10.0)


def test_structure_is_the_luma_correlation_and_zero_for_a_flat_frame():
    frames = np.stack([smooth_frame(i, 64, 48)[..., ::-1] for i in range(4)])
    assert metrics.structure(frames, frames) == pytest.approx(1.0)
    assert metrics.structure(frames, 255 - frames) == pytest.approx(-1.0)
    # brighter and lower-contrast is the same layout: a correlation ignores gain and offset
    assert metrics.structure(frames, (frames * 0.5 + 60).astype(np.uint8)) > 0.99
    flat = np.full_like(frames, 77)
    assert metrics.structure(frames, flat) == 0.0 and metrics.structure(flat, frames) == 0.0
    # per frame, then the mean: one kept frame and one flat frame score one half
    assert metrics.structure(frames[:2], np.stack([frames[0], flat[1]])) == pytest.approx(0.5)
    # the luma is BT.601's
    green = np.zeros((1, 1, 1, 3), np.uint8)
    green[..., 1] = 200
    assert metrics.luma(green).item() == pytest.approx(0.587 * 200, abs=0.01)


def test_lab_gaussian_and_its_w2_distance_on_known_values():
    white = np.full((2, 48, 64, 3), 255, np.uint8)
    mean, cov = metrics.lab_gaussian(white)
    assert mean == pytest.approx([100.0, 0.0, 0.0], abs=0.01) and np.abs(cov).max() < 1e-6
    frames = np.stack([smooth_frame(i, 64, 48)[..., ::-1] for i in range(6)])
    m, c = metrics.lab_gaussian(frames)
    assert np.all(np.linalg.eigvalsh(c) > 0) and 0 < m[0] < 100
    # running over batches is the same as pooled
    g = metrics.LabGaussian()
    g.add(frames[:2])
    g.add(frames[2:])
    assert g.mean == pytest.approx(m) and g.cov == pytest.approx(c)
    assert metrics.w2_gaussian(m, c, m, c) == pytest.approx(0.0, abs=1e-4)  # sqrt of rounding
    shift = np.array([3.0, -4.0, 12.0])
    assert metrics.w2_gaussian(m, c, m + shift, c) == pytest.approx(13.0)
    # isotropic covariances s1^2 I and s2^2 I: W2^2 = |m1 - m2|^2 + 3 (s1 - s2)^2
    eye = np.eye(3)
    assert metrics.w2_gaussian(np.zeros(3), 4 * eye, np.zeros(3), 25 * eye) == pytest.approx(math.sqrt(3) * 3)
    assert metrics.w2_gaussian(m, c, np.zeros(3), eye) == pytest.approx(metrics.w2_gaussian(np.zeros(3), eye, m, c))


def test_colourfulness_on_known_images():
    assert metrics.colourfulness(np.full((2, 48, 64, 3), 128, np.uint8)) == 0.0
    assert metrics.colourfulness(np.stack([grey_frame(i, 64, 48) for i in range(3)])) == 0.0
    # one colour: no spread, only the offset term 0.3 sqrt(mean(rg)^2 + mean(yb)^2), rg = 100, yb = 100
    orange = np.zeros((1, 48, 64, 3), np.uint8)
    orange[...] = (200, 100, 50)
    assert metrics.colourfulness(orange) == pytest.approx(0.3 * math.hypot(100, 100))
    # half pure red, half pure green: rg = +-255 (std 255, mean 0), yb = 127.5 everywhere
    halves = np.zeros((1, 48, 64, 3), np.uint8)
    halves[:, :, :32, 0] = 255
    halves[:, :, 32:, 1] = 255
    assert metrics.colourfulness(halves) == pytest.approx(255 + 0.3 * 127.5)


def test_warp_error_follows_the_inputs_flow_across_batches():
    # a texture sliding 2 pixels a frame: a copy that moves with it is still along the flow; one that
    # flickers is off by the flicker's size; one that stands still while the input moves is off too
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (80, 120, 3), dtype=np.uint8), (0, 0), 2.0)
    frames = np.stack([base[10:58, 10 + 2 * i:74 + 2 * i] for i in range(8)])
    still = metrics.warp_error(frames, frames)
    assert still < 3.0
    flicker = frames.astype(np.int16)
    flicker[1::2] += 40
    flicker = flicker.clip(0, 255).astype(np.uint8)
    assert metrics.warp_error(frames, flicker) == pytest.approx(40.0, abs=5.0)
    frozen = np.repeat(frames[:1], len(frames), axis=0)
    assert metrics.warp_error(frames, frozen) > 3 * still
    # the pair across a batch boundary counts: two batches score as one
    w = metrics.WarpError()
    w.add(frames[:3], {"copy": frames[:3], "flicker": flicker[:3]})
    w.add(frames[3:], {"copy": frames[3:], "flicker": flicker[3:]})
    assert w.pairs == 7
    assert w.mean("copy") == pytest.approx(still) and w.mean("inputs") == pytest.approx(still)
    assert w.mean("flicker") == pytest.approx(metrics.warp_error(frames, flicker))
    assert metrics.warp_error(frames[:1], frames[:1]) is None


# ---- eval on real packs ------------------------------------------------------------------------------------

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
    assert "thumbnail 16x9" in out and "blur sigma 4" in out and "model - thumbnail" in out
    doc = json.loads(report.read_text())
    assert [r["frames"] for r in doc["results"]] == [20, 20]
    for r in doc["results"]:
        assert set(r["scores"]) == {"model", "thumbnail 16x9", "gaussian blur sigma 4"}
        assert all(math.isfinite(s["psnr_db"]) and 0 < s["ssim"] <= 1 for s in r["scores"].values())
        assert all(-1 <= s["structure"] <= 1 and s["colourfulness"] >= 0 and s["warp_error"] >= 0
                   for s in r["scores"].values())
        assert r["motion"]["inputs"] > 0 and r["inputs"]["warp_error"] >= 0
        # a random pack records no training colours: the figure says so instead of a number
        assert r["palette"] is None and r["palette_missing"]
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
    results = {name: eval_json(tmp_path, pack, clip, name=name)[0]
               for name, pack in (("teal", faithful), ("magenta", wrong))}
    teal, magenta = results["teal"]["palette"], results["magenta"]["palette"]
    assert teal["inputs_w2"] == pytest.approx(magenta["inputs_w2"]) and teal["inputs_w2"] > 20
    # the training frames are teal with a little noise: a flat teal is their mean, off only by their spread
    assert teal["outputs_w2"] < 10 and teal["transfer"]
    assert magenta["outputs_w2"] > teal["inputs_w2"] and not magenta["transfer"]
    for r in results.values():
        model = r["scores"]["model"]
        # a constant-colour model shows nothing of its input's composition and does not follow its motion,
        # and it never flickers
        assert model["structure"] == pytest.approx(0.0, abs=0.05)
        assert r["motion"]["outputs"] == pytest.approx(0.0, abs=0.01)
        assert model["warp_error"] == pytest.approx(0.0, abs=0.5)
        # the thumbnail keeps the composition at 32x18 nearly whole
        assert r["scores"]["thumbnail 16x9"]["structure"] > 0.9


def test_an_identity_like_model_keeps_structure_and_palette(tmp_path, make_video, capsys):
    palette = palette_of([tinted_frame((160, 140, 20))(i, 64, 48) for i in range(8)])
    pack = identity_pack(tmp_path / "identity", palette)
    # lossless, so that the input the model sees is the input scored against
    clip = make_video("foreign.avi", n_frames=12, width=32, height=32, fourcc="FFV1", frame_fn=smooth_frame)
    (r,) = eval_json(tmp_path, pack, clip)
    model, inputs = r["scores"]["model"], r["inputs"]
    # null in JSON is an infinite PSNR: the pack gives its input back exactly (ONNX Runtime's float rounding
    # could cost a grey level somewhere, hence the bound)
    assert model["psnr_db"] is None or model["psnr_db"] > 45
    assert model["structure"] == pytest.approx(1.0, abs=1e-3)
    # far from the teal film's colours, and exactly as far after the model
    assert r["palette"]["inputs_w2"] > 20
    assert r["palette"]["outputs_w2"] == pytest.approx(r["palette"]["inputs_w2"], abs=0.1)
    assert model["colourfulness"] == pytest.approx(inputs["colourfulness"], rel=0.01) and inputs["colourfulness"] > 20
    assert model["motion_ratio"] == pytest.approx(1.0, abs=0.01)
    assert model["warp_error"] == pytest.approx(inputs["warp_error"], abs=0.05)
    out = capsys.readouterr().out
    for column in ("structure", "palette", "colour", "motion", "warp"):
        assert column in out
    assert "palette (CIELAB W2 to the pack's model.json)" in out


def test_a_model_trained_on_one_colour_moves_grey_footage_toward_it(tmp_path, make_video, capsys):
    # the film: an orange world (BGR 40, 120, 230) with soft shapes; the footage: grey, no colour at all
    def orange(i: int, width: int, height: int) -> np.ndarray:
        shade = grey_frame(i, width, height).astype(np.float32) / 255.0
        return (shade * np.array([40, 120, 230], np.float32) * 1.2).clip(0, 255).astype(np.uint8)

    film = make_video("film.mp4", n_frames=24, width=64, height=48, frame_fn=orange)
    ds, run, pack = tmp_path / "ds", tmp_path / "run", tmp_path / "pack"
    assert cli("prepare", film, "-o", ds, "--size", "64x48") == 0
    assert cli("train", ds, "-o", run, "--steps", 12, "--batch", 4, "--checkpoint-every", 12, "--no-progress",
               "--device", "cpu") == 0
    assert cli("export", run, "-o", pack) == 0
    # the training frames' colours travel with the pack
    recorded = json.loads((pack / "model.json").read_text())["palette"]
    assert len(recorded["lab_mean"]) == 3 and recorded["lab_mean"][1] > 10  # orange: a > 0
    grey = make_video("grey.mp4", n_frames=12, width=64, height=48, frame_fn=grey_frame)
    capsys.readouterr()
    (r,) = eval_json(tmp_path, pack, grey)
    frames = np.stack([orange(i, 64, 48)[..., ::-1] for i in range(24)])
    film_colour = metrics.colourfulness(frames)
    grey_colour, out_colour = r["inputs"]["colourfulness"], r["scores"]["model"]["colourfulness"]
    assert grey_colour < 2 and film_colour > 40
    # the output's colourfulness goes from the grey input's toward the film's, and its colours toward the film's
    assert grey_colour + 0.3 * (film_colour - grey_colour) < out_colour
    assert r["palette"]["transfer"] and r["palette"]["outputs_w2"] < 0.7 * r["palette"]["inputs_w2"]


def test_a_pack_without_the_training_colours_says_why_and_takes_them_from_footage(tmp_path, make_video, capsys):
    clip = make_video("clip.mp4", n_frames=8, width=64, height=48, frame_fn=smooth_frame)
    film = make_video("film.mp4", n_frames=8, width=64, height=48, frame_fn=tinted_frame((160, 140, 20)))
    old = painter_pack(tmp_path / "old", (40, 140, 160), {"bins_per_channel": 8, "histogram": [1 / 512] * 512})
    none = painter_pack(tmp_path / "none", (40, 140, 160), None)
    capsys.readouterr()
    for pack, why in ((old, "records only an RGB histogram"), (none, "records no training colours")):
        (r,) = eval_json(tmp_path, pack, clip, name=pack.name)
        assert r["palette"] is None and why in r["palette_missing"]
        assert r["scores"]["model"]["palette_w2"] is None and r["inputs"]["palette_w2"] is None
        assert why in capsys.readouterr().out
    report = tmp_path / "given.json"
    assert cli("eval", old, clip, "--palette", film, "--json", report) == 0
    r = json.loads(report.read_text())["results"][0]
    assert r["palette"]["reference"] == str(film) and r["palette"]["transfer"]
    assert cli("eval", old, clip, "--palette", tmp_path / "missing.mp4") == 2


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
    assert "the copies follow every frame at their sharpness" in capsys.readouterr().out
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
