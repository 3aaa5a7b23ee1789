"""GPU smoke test: every GPU path of autoencoded, checked on your NVIDIA machine in under 10 minutes.

    python benchmarks/gpu_smoke.py [--json report.json] [--keep DIR]

Prints one line per check (PASS, FAIL or SKIP with the reason) and exits 1 if any check failed. Please run it
on a GPU machine and send its whole output: the machines this project is built on have no GPU.

Checks, in order:
 1. environment: Python, torch (CUDA, cuDNN), ONNX Runtime (package, providers), TensorRT, the GPUs; FAIL
    when onnxruntime and onnxruntime-gpu are both installed (the CUDA provider goes missing);
 2. training steps on CUDA (bf16 autocast, channels_last), again with --compile, then --resume;
 3. `export --verify` of that run (torch against ONNX Runtime on the CPU, FP32);
 4. torch on CUDA against ONNX Runtime's CUDA provider (TF32 off on both sides' reference);
 5. a TensorRT FP16 build: parity against FP32, FP16 proven on the outputs, CUDA-graph capture;
 6. batch sizes 8, 1, 3, 1 through the fastest engine (the CUDA graph at 1, the dynamic profile otherwise);
 7. a second engine loaded on a thread while the first runs (what a /model hot-swap does);
 8. `autoencoded bench`;
 9. with 2 or more GPUs, 8 DDP steps over NCCL.
Without a GPU the same script runs its CPU tier (the CPU versions of 2, 3, 6, 7, 8; the rest SKIP): that tier
is part of the test suite (tests/test_gpu_smoke.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Skip(Exception):
    pass


def autoencoded(*args, env: dict | None = None, timeout: float = 300) -> str:
    """The real command line in a child process; its output, or RuntimeError with its last lines."""
    r = subprocess.run([sys.executable, "-m", "autoencoded", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO)
    if r.returncode != 0:
        tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"`autoencoded {' '.join(map(str, args[:2]))} ...` exited {r.returncode}: {tail}")
    return r.stdout + r.stderr


class Smoke:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        self.size = "256x144" if self.cuda else "64x48"  # the CPU tier stays small: it runs in the tests
        self.results: list[dict] = []
        self.facts: dict = {}

    def check(self, name: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            detail, status = fn(), "PASS"
        except Skip as exc:
            detail, status = str(exc), "SKIP"
        except Exception as exc:  # a failed check is reported, and the others still run
            detail, status = f"{type(exc).__name__}: {exc}", "FAIL"
            self.facts.setdefault("tracebacks", {})[name] = traceback.format_exc(limit=6)
        seconds = time.perf_counter() - t0
        self.results.append({"check": name, "status": status, "detail": detail, "seconds": round(seconds, 1)})
        print(f"{status:4}  {name}: {detail}  ({seconds:.1f} s)", flush=True)

    # 1 ------------------------------------------------------------------------------------------
    def environment(self) -> str:
        def version(dist: str) -> str | None:
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                return None

        ort_dists = {d: version(d) for d in ("onnxruntime", "onnxruntime-gpu")}
        facts = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
                 "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if self.cuda else None,
                 "gpus": [f"{torch.cuda.get_device_name(i)} (compute {'.'.join(map(str, torch.cuda.get_device_capability(i)))})"
                          for i in range(torch.cuda.device_count())],
                 "onnxruntime_packages": {k: v for k, v in ort_dists.items() if v},
                 "tensorrt": version("tensorrt") or version("tensorrt-cu12") or version("tensorrt-cu13")}
        try:
            import onnxruntime as ort
            facts["onnxruntime"] = ort.__version__
            facts["onnxruntime_providers"] = ort.get_available_providers()
        except Exception as exc:
            facts["onnxruntime"] = f"import failed: {exc}"
        self.facts.update(facts)
        if all(ort_dists.values()):
            raise RuntimeError("onnxruntime and onnxruntime-gpu are both installed (microsoft/onnxruntime#26996): "
                               "pip uninstall -y onnxruntime onnxruntime-gpu && pip install -e '.[gpu]'")
        gpus = ", ".join(facts["gpus"]) or "no CUDA GPU"
        return (f"torch {facts['torch']} (CUDA {facts['torch_cuda']}), onnxruntime {facts.get('onnxruntime')} "
                f"{facts.get('onnxruntime_providers')}, tensorrt {facts['tensorrt']}; {gpus}")

    # 2 ------------------------------------------------------------------------------------------
    def training(self) -> str:
        from autoencoded.live.assets import DEMO_CLIP
        ds, run = self.work / "ds", self.work / "run"
        autoencoded("prepare", DEMO_CLIP, "-o", ds, "--size", self.size, "--max-frames", 48, "--overwrite")
        common = ["--device", self.device, "--batch", 8, "--checkpoint-every", 2, "--no-progress"]
        t0 = time.perf_counter()
        autoencoded("train", ds, "-o", run, "--steps", 2, *common)
        plain = time.perf_counter() - t0
        said = []
        if self.cuda:
            t0 = time.perf_counter()
            autoencoded("train", ds, "-o", self.work / "run-compiled", "--steps", 2, "--compile", *common)
            said.append(f"--compile {time.perf_counter() - t0:.0f} s")
        autoencoded("train", ds, "-o", run, "--resume", "--steps", 4, *common)
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        steps = sorted({m["step"] for m in metrics if "step" in m and "kl" in m})
        if steps[-1] != 4:
            raise RuntimeError(f"resume ended at step {steps[-1]}, not 4")
        bad = [m["step"] for m in metrics if "kl" in m and not np.isfinite(m["kl"])]
        if bad:
            raise RuntimeError(f"non-finite losses at steps {bad}")
        return f"{self.device}: 2 steps {plain:.0f} s, " + ", ".join(said + ["resumed to step 4"])

    # 3 ------------------------------------------------------------------------------------------
    def export(self) -> str:
        out = autoencoded("export", self.work / "run", "-o", self.work / "pack", "--which", "latest", "--verify",
                          "--frames", self.work / "ds", "--overwrite")
        return next((line for line in out.splitlines() if line.startswith("verify")), "verified").strip()

    # 4 ------------------------------------------------------------------------------------------
    def torch_vs_ort_cuda(self) -> str:
        if not self.cuda:
            raise Skip("no CUDA GPU")
        from autoencoded.live.engines.ort_backend import OnnxRuntimeEngine, cuda_available
        from autoencoded.live.engines.pack import read_pack
        from autoencoded.live.engines.parity import load_frames
        from autoencoded.live.engines.torch_backend import TorchEngine
        if not cuda_available():
            raise RuntimeError("onnxruntime has no CUDAExecutionProvider (is the `gpu` extra installed?)")
        torch.backends.cudnn.allow_tf32 = False  # FP32 against FP32
        torch.backends.cuda.matmul.allow_tf32 = False
        pack = read_pack(self.work / "pack")
        frames, _ = load_frames(self.work / "ds", pack.width, pack.height, n=8)
        with OnnxRuntimeEngine(pack, device="cuda") as o, TorchEngine(pack.meta["source_checkpoint"], device="cuda") as t:
            mo, _ = o.encode(frames)
            mt, _ = t.encode(frames)
            diff = float(np.abs(mo - mt).max())
            img = int(np.abs(o.reconstruct(frames).astype(int) - t.reconstruct(frames).astype(int)).max())
        if diff > 1e-3 or img > 2:
            raise RuntimeError(f"latent max abs {diff:.2e}, image max {img} levels")
        return f"{o.name} vs torch cuda: latent max abs {diff:.2e}, image max {img} levels"

    # 5 ------------------------------------------------------------------------------------------
    def tensorrt(self) -> str:
        from autoencoded.live.engines import tensorrt_unavailable
        reason = tensorrt_unavailable()
        if reason:
            raise Skip(reason)
        from autoencoded.live.engines.pack import read_pack
        from autoencoded.live.engines.parity import load_frames
        from autoencoded.live.engines.tensorrt_backend import TensorRTEngine
        pack = read_pack(self.work / "pack")
        frames, _ = load_frames(self.work / "ds", pack.width, pack.height, n=8)
        lines: list[str] = []
        with TensorRTEngine(pack, max_batch=8, log=lines.append, parity_frames=frames) as e:
            p = e.parity
            graphs = {k: r.graph_error for k, r in e.runners.items() if r.graph is None}
            if e.precision != "fp16" or not p["ok"]:
                raise RuntimeError(f"FP16 engine not used: {p.get('reason')}")
            if graphs:
                raise RuntimeError(f"CUDA graph capture failed: {graphs}")
            self.facts["tensorrt_parity"] = p
            self.facts["tensorrt_log"] = lines
        return (f"{e.name}: PSNR {p['psnr_db']:.1f} dB vs FP32, {p['fp16_share']:.1%} of outputs FP16 numbers "
                f"(FP32 engine {p['fp32_fp16_share']:.2%}), layers {p['layers']}")

    # 6 ------------------------------------------------------------------------------------------
    def batch_sizes(self) -> str:
        from autoencoded.live.engines import open_engine
        from autoencoded.live.engines.ort_backend import OnnxRuntimeEngine
        from autoencoded.live.engines.pack import read_pack
        from autoencoded.live.engines.parity import load_frames
        pack = read_pack(self.work / "pack")
        frames, _ = load_frames(self.work / "ds", pack.width, pack.height, n=8)
        with OnnxRuntimeEngine(pack, device="cpu") as ref_engine:
            ref = ref_engine.reconstruct(frames)
        worst = {}
        with open_engine(pack.path, "auto", log=lambda s: None, max_batch=8) as e:
            for n in (8, 1, 3, 1):
                out = e.reconstruct(frames[:n])
                worst[n] = max(worst.get(n, 0.0), float(np.abs(out.astype(int) - ref[:n].astype(int)).mean()))
            name = e.name
        if max(worst.values()) > 3.0:
            raise RuntimeError(f"mean abs error against ONNX Runtime FP32 by batch: {worst}")
        return f"{name}: mean abs error against FP32 by batch size " + ", ".join(f"{k}: {v:.2f}" for k, v in worst.items())

    # 7 ------------------------------------------------------------------------------------------
    def second_engine_on_a_thread(self) -> str:
        from autoencoded.live.engines import open_engine
        from autoencoded.live.engines.parity import load_frames
        first = open_engine(self.work / "pack", "auto", log=lambda s: None)
        frames, _ = load_frames(self.work / "ds", first.width, first.height, n=2)
        before = first.reconstruct(frames[:1])
        box: dict = {}

        def load():
            try:
                box["engine"] = open_engine(self.work / "pack", "auto", log=lambda s: None)
                box["out"] = box["engine"].reconstruct(frames[:1])
            except Exception as exc:
                box["error"] = exc

        t = threading.Thread(target=load, name="model-loader")
        t.start()
        runs = 0
        while t.is_alive():
            out = first.reconstruct(frames[:1])
            runs += 1
            if not np.array_equal(out, before):
                raise RuntimeError("the running engine's output changed while the second one loaded")
        t.join()
        if "error" in box:
            raise box["error"]
        second = box["engine"]
        agree = float(np.abs(box["out"].astype(int) - before.astype(int)).mean())
        name = first.name
        first.close()
        second.close()
        return f"{name}: {runs} frames ran while the second engine loaded; the two agree to {agree:.2f} levels"

    # 8 ------------------------------------------------------------------------------------------
    def bench(self) -> str:
        out = self.work / "bench.json"
        autoencoded("bench", "--model", self.work / "pack", "--seconds", 1.0 if self.cuda else 0.1,
                    "--max-batch", 16, "--json", out, timeout=600)
        rows = json.loads(out.read_text())["results"]
        self.facts["bench"] = rows
        return "; ".join(f"{r['backend']}: {r['batch1']['fps']:.0f} fps at batch 1" if "batch1" in r
                         else f"{r['backend']}: skipped ({r['skipped'][:80]})" for r in rows)

    # 9 ------------------------------------------------------------------------------------------
    def ddp(self) -> str:
        n = torch.cuda.device_count()
        if n < 2:
            raise Skip(f"{n} CUDA GPU{'s' if n != 1 else ''}; DDP over NCCL needs 2 or more")
        run = self.work / "run-ddp"
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "autoencoded", "train", self.work / "ds", "-o", run, "--steps", 8, "--batch", 16,
                            "--device", "cuda", "--checkpoint-every", 4, "--no-progress"],
                           capture_output=True, text=True, timeout=600, cwd=REPO)
        if r.returncode != 0:
            raise RuntimeError(" | ".join(r.stderr.strip().splitlines()[-3:]))
        steps = [json.loads(line).get("step") for line in (run / "metrics.jsonl").read_text().splitlines()]
        return f"2 processes over NCCL, {max(s for s in steps if s)} steps"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a temp one)")
    args = ap.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="autoencoded-gpu-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("AUTOENCODED_CACHE", str(work / "cache"))  # engines built here stay out of ~/.cache
    smoke = Smoke(work)
    t0 = time.perf_counter()
    print(f"autoencoded GPU smoke test ({'GPU' if smoke.cuda else 'CPU'} tier) in {work}", flush=True)
    for name, fn in (("environment", smoke.environment), ("training", smoke.training), ("export --verify", smoke.export),
                     ("torch vs onnxruntime CUDA", smoke.torch_vs_ort_cuda), ("tensorrt fp16", smoke.tensorrt),
                     ("batch sizes 8, 1, 3, 1", smoke.batch_sizes),
                     ("second engine on a thread", smoke.second_engine_on_a_thread), ("bench", smoke.bench),
                     ("ddp over nccl", smoke.ddp)):
        smoke.check(name, fn)
    counts = {s: sum(r["status"] == s for r in smoke.results) for s in ("PASS", "FAIL", "SKIP")}
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"results": smoke.results, "facts": smoke.facts}, indent=2, default=str))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
