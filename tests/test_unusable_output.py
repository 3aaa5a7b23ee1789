"""A model pack whose real output is not what it declares: eval and bench say so in one line, exit 2, instead of
"internal error" from deep inside a metric or a timing loop. Real packs exported from a tiny checkpoint, their
decoder rewritten with onnx (a picture cut to half its width under the declared full shape; NaN everywhere),
run by ONNX Runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from autoencoded.cli import main
from autoencoded.live.engines.pack import META_FILE, hash_files

from helpers import tiny_checkpoint, write_video

W, H = 64, 48


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    from autoencoded.export.onnx_export import export_checkpoint

    root = tmp_path_factory.mktemp("unusable")
    return export_checkpoint(tiny_checkpoint(root / "tiny.safetensors", W, H), root / "pack", log=lambda m: None)[0]


def doctored(src: Path, out: Path, kind: str) -> Path:
    """A copy of `src` whose decoder's "image" is the real one cut to half its width ("narrow", its declared
    shape left N x 3 x H x W) or the real one times NaN ("nan")."""
    shutil.copytree(src, out)
    meta = json.loads((out / META_FILE).read_text())
    path = out / meta["files"]["decoder"]
    model = onnx.load(str(path))
    g = model.graph
    for node in g.node:
        node.output[:] = ["image_raw" if o == "image" else o for o in node.output]
    if kind == "narrow":
        g.initializer.extend([helper.make_tensor("from", TensorProto.INT64, [1], [0]),
                              helper.make_tensor("to", TensorProto.INT64, [1], [W // 2]),
                              helper.make_tensor("axis", TensorProto.INT64, [1], [3])])
        g.node.append(helper.make_node("Slice", ["image_raw", "from", "to", "axis"], ["image"]))
    else:
        g.initializer.append(helper.make_tensor("nan", TensorProto.FLOAT, [], [float("nan")]))
        g.node.append(helper.make_node("Mul", ["image_raw", "nan"], ["image"]))
    onnx.save(model, str(path))
    meta["model_hash"] = hash_files(out, meta["files"])
    (out / META_FILE).write_text(json.dumps(meta))
    return out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    assert not any(line.startswith("internal error") for line in err), err
    return err[-1]


@pytest.mark.parametrize("kind, says", [("narrow", "64x48"), ("nan", "NaN")])
def test_eval_of_a_pack_whose_output_is_not_what_it_declares(pack, tmp_path, capsys, kind, says):
    bad = doctored(pack, tmp_path / kind, kind)
    clip = write_video(tmp_path / "clip.mp4", n_frames=8, width=W, height=H, fps=25.0)
    assert main(["eval", str(bad), str(clip), "--json", str(tmp_path / "eval.json")]) == 2
    line = one_error_line(capsys)
    assert says in line and "clip.mp4: the model failed on frames 0-7" in line, line
    assert not (tmp_path / "eval.json").exists()


@pytest.mark.parametrize("kind, says", [("narrow", "64x48"), ("nan", "NaN")])
def test_bench_of_a_pack_whose_output_is_not_what_it_declares(pack, tmp_path, capsys, kind, says):
    bad = doctored(pack, tmp_path / kind, kind)
    assert main(["bench", "--model", str(bad), "--backend", "onnxruntime", "--seconds", "0.05",
                 "--max-batch", "4"]) == 2
    line = one_error_line(capsys)
    assert says in line and str(bad) in line, line
