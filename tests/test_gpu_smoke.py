"""The CPU tier of benchmarks/gpu_smoke.py (the script GPU users run and send us): every check that needs no
GPU passes here, and every GPU check says why it was skipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def test_gpu_smoke_script_cpu_tier(tmp_path):
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_smoke.py"), "--json", str(report),
                        "--keep", str(tmp_path / "work")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    results = {x["check"]: x for x in json.loads(report.read_text())["results"]}
    assert list(results) == ["environment", "training", "export --verify", "torch vs onnxruntime CUDA",
                             "tensorrt fp16", "batch sizes 8, 1, 3, 1", "second engine on a thread", "bench",
                             "ddp over nccl"]
    must_pass = ["environment", "training", "export --verify", "batch sizes 8, 1, 3, 1",
                 "second engine on a thread", "bench"]
    assert all(results[c]["status"] == "PASS" for c in must_pass), {c: results[c] for c in must_pass}
    if not torch.cuda.is_available():
        for c in ("torch vs onnxruntime CUDA", "tensorrt fp16", "ddp over nccl"):
            assert results[c]["status"] == "SKIP" and results[c]["detail"], results[c]
    assert "resumed to step 4" in results["training"]["detail"]
    assert "passed, 0 failed" in r.stdout
