"""benchmarks/gpu_smoke.py (the script GPU users run and send us): its CPU tier passes every check that needs no
GPU and says why each GPU check was skipped; a GPU that nvidia-smi sees and torch cannot use is a failure, not
a CPU tier that passes (nvidia-smi, the driver's side of the probe, is a script on PATH here)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_smoke.py"
CHECKS = ["environment", "training", "training --compile", "export --verify", "torch vs onnxruntime CUDA",
          "tensorrt fp16", "batch sizes 8, 1, 3, 1", "second engine on a thread", "bench", "ddp over nccl"]

# what nvidia-smi prints on a machine with an H100 and a driver for CUDA 12.2: the CSV query, and the banner
H100_SMI = """#!/bin/sh
case "$1" in
  --query-gpu=*) echo "NVIDIA H100 80GB HBM3, 535.104.05" ;;
  *) echo "| NVIDIA-SMI 535.104.05      Driver Version: 535.104.05      CUDA Version: 12.2 |" ;;
esac
"""
# and on a machine whose driver sees no GPU
NO_GPU_SMI = """#!/bin/sh
echo "No devices were found"
exit 6
"""


def fake_nvidia_smi(folder: Path, script: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text(script)
    exe.chmod(0o755)
    return folder


def run_smoke(tmp_path: Path, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--json", str(report), "--keep", str(tmp_path / "work")],
                       capture_output=True, text=True, timeout=2400, env=env)  # a hang guard
    return r, {x["check"]: x for x in json.loads(report.read_text())["results"]}


def test_gpu_smoke_script_cpu_tier(tmp_path):
    r, results = run_smoke(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(results) == CHECKS
    must_pass = ["environment", "training", "export --verify", "batch sizes 8, 1, 3, 1",
                 "second engine on a thread", "bench"]
    assert all(results[c]["status"] == "PASS" for c in must_pass), {c: results[c] for c in must_pass}
    # the environment line names the CUDA major of each build, "none" for a CPU build
    majors = re.search(r"CUDA majors: torch (\d+|none), onnxruntime (\d+|none)", results["environment"]["detail"])
    assert majors, results["environment"]
    assert majors.group(1) == (torch.version.cuda.split(".")[0] if torch.version.cuda else "none")
    if not torch.cuda.is_available():
        for c in ("training --compile", "torch vs onnxruntime CUDA", "tensorrt fp16", "ddp over nccl"):
            assert results[c]["status"] == "SKIP" and results[c]["detail"], results[c]
    assert "resumed to step 4" in results["training"]["detail"]
    assert "passed, 0 failed" in r.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch uses this machine's GPU")
def test_a_gpu_torch_cannot_use_fails_naming_both_versions(tmp_path):
    bin_dir = fake_nvidia_smi(tmp_path / "bin", H100_SMI)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    r, results = run_smoke(tmp_path, env)
    assert r.returncode == 1, r.stdout + r.stderr
    env_check = results["environment"]
    assert env_check["status"] == "FAIL"
    # the driver nvidia-smi reports, and what torch is built for (a CPU build here: CUDA none)
    assert "NVIDIA H100 80GB HBM3" in env_check["detail"] and "535.104.05" in env_check["detail"]
    assert f"torch {torch.__version__}" in env_check["detail"]
    assert "CUDA 12.2" in env_check["detail"] and f"CUDA {torch.version.cuda or 'none'}" in env_check["detail"]
    # nothing else runs: a CPU tier that passed would read as a GPU that works
    assert all(results[c]["status"] == "SKIP" and "nvidia-smi" in results[c]["detail"] for c in CHECKS[1:])
    assert "0 passed, 1 failed" in r.stdout


def _smoke_module():
    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_verdict_reads_nvidia_smi(tmp_path, monkeypatch):
    smoke = _smoke_module()
    monkeypatch.setenv("PATH", str(fake_nvidia_smi(tmp_path / "h100", H100_SMI)))
    seen = smoke.nvidia_smi()
    assert seen == {"gpus": ["NVIDIA H100 80GB HBM3"], "driver": "535.104.05", "cuda": "12.2"}
    assert smoke.unusable_gpu(seen, torch_sees_cuda=True, torch_version="2.13.0", torch_cuda="13.0") is None
    too_old = smoke.unusable_gpu(seen, torch_sees_cuda=False, torch_version="2.13.0", torch_cuda="13.0")
    assert "built for CUDA 13.0" in too_old and "CUDA 12.2" in too_old and "driver older" in too_old
    assert "CPU build" in smoke.unusable_gpu(seen, torch_sees_cuda=False, torch_version="2.13.0+cpu", torch_cuda=None)
    # a driver that sees no GPU, and no nvidia-smi at all: nothing to fail on, the CPU tier runs
    monkeypatch.setenv("PATH", str(fake_nvidia_smi(tmp_path / "none", NO_GPU_SMI)))
    assert smoke.nvidia_smi() is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert smoke.nvidia_smi() is None
    assert smoke.unusable_gpu(None, torch_sees_cuda=False, torch_version="2.13.0+cpu", torch_cuda=None) is None


def test_a_failed_fp16_proof_reports_what_it_saw():
    """The proof assumes the final Tanh->Cast rounds every output to FP16. An engine whose layers are FP16 and
    whose picture agrees with FP32, but whose outputs are not FP16 numbers (TensorRT wrote the tanh as FP32),
    is named as such rather than as an FP32 engine."""
    from autoencoded.live.engines.tensorrt_build import fp16_share
    smoke = _smoke_module()
    rng = np.random.default_rng(0)
    fp32_out = np.tanh(rng.normal(size=(8, 3, 48, 64))).astype(np.float32)
    fused = {"fp16_share": fp16_share(fp32_out), "fp32_fp16_share": fp16_share(fp32_out),
             "layers": {"fp16": 40, "other": 6}, "psnr_db": 61.2}
    said = smoke.fp16_evidence(fused)
    assert said.startswith(f"{fused['fp16_share']:.1%} of outputs FP16 numbers") and "40 FP16" in said
    assert "61.2 dB" in said and "fused the final Tanh->Cast" in said
    fp32_engine = {**fused, "layers": {"fp32": 40, "other": 6}}
    assert "fused" not in smoke.fp16_evidence(fp32_engine) and "40 FP32" in smoke.fp16_evidence(fp32_engine)
    real_fp16 = {**fused, "fp16_share": fp16_share(fp32_out.astype(np.float16))}
    assert smoke.fp16_evidence(real_fp16).startswith("100.0% of outputs FP16 numbers")
    assert "fused" not in smoke.fp16_evidence(real_fp16)
