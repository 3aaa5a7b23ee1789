"""GPU smoke test: every GPU path of autoencoded, checked on your NVIDIA machine in under 10 minutes.

    python benchmarks/gpu_smoke.py [--json report.json] [--keep DIR]

Prints one line per check (PASS, FAIL or SKIP with the reason) and exits 1 if any check failed. Please run it
on a GPU machine and send its whole output: the machines this project is built on have no GPU.

Checks, in order:
 1. environment: Python, torch (CUDA, cuDNN), ONNX Runtime (package, providers), TensorRT, the GPUs, and the
    CUDA major torch and onnxruntime are each built for ("none" for a CPU build); FAIL when onnxruntime and
    onnxruntime-gpu are both installed (the CUDA provider goes missing), and when nvidia-smi sees a GPU that
    torch cannot use (a CPU build of torch, or a driver older than torch's CUDA): the other checks then SKIP,
    since the CPU tier would pass on a machine whose GPU paths never ran;
 2. training steps on CUDA (bf16 autocast, channels_last), then --resume;
 3. training with --compile, past the step the discriminator joins (Triton needs a C compiler: gcc or clang);
 4. `export --verify` of the run of 2 (torch against ONNX Runtime on the CPU, FP32);
 5. torch on CUDA against ONNX Runtime's CUDA provider, FP32 on both sides (TF32 off in torch, and use_tf32=0
    for ONNX Runtime, whose CUDA provider uses TF32 unless told);
 6. a TensorRT FP16 build: parity against FP32, FP16 proven on the outputs (a failed proof reports what it
    saw: the share of FP16 numbers, the layers' precisions, the PSNR), CUDA-graph capture;
 7. batch sizes 8, 1, 3, 1 through the fastest engine (the CUDA graph at 1, the dynamic profile otherwise);
 8. a second engine loaded on a thread while the first runs (what a /model hot-swap does);
 9. `autoencoded bench`;
10. with 2 or more GPUs, 8 DDP steps over NCCL.
Every engine is built for one batch limit (MAX_BATCH), so TensorRT builds one set of engines, not one per check.
Without a GPU the same script runs its CPU tier (the CPU versions of 2, 4, 7, 8, 9; the rest SKIP with the
reason): that tier is part of the test suite (tests/test_gpu_smoke.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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


#: the batch limit of every engine the checks open (TensorRT builds per limit: one limit, one set of engines)
MAX_BATCH = 8


class Skip(Exception):
    pass


def nvidia_smi() -> dict | None:
    """What the NVIDIA driver sees, asked of nvidia-smi (its CSV query is the scripting interface; the CUDA
    version comes from its banner, best effort): {"gpus": [...], "driver": ..., "cuda": ...}, or None when
    there is no nvidia-smi or it sees no GPU."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        q = subprocess.run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=30)
        rows = [[c.strip() for c in line.split(",")] for line in q.stdout.splitlines() if line.strip()]
        if q.returncode != 0 or not rows:
            return None
        banner = subprocess.run([exe], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", banner)
    return {"gpus": [r[0] for r in rows], "driver": rows[0][-1], "cuda": cuda.group(1) if cuda else None}


def major(version: str | None) -> str:
    return str(version).split(".")[0] if version else "none"


def unusable_gpu(smi: dict | None, torch_sees_cuda: bool, torch_version: str, torch_cuda: str | None) -> str | None:
    """Why the GPU nvidia-smi sees is one torch cannot use, or None (no GPU, or torch uses it)."""
    if smi is None or torch_sees_cuda:
        return None
    seen = f"nvidia-smi sees {', '.join(smi['gpus'])} (driver {smi['driver']}, CUDA {smi['cuda'] or '?'})"
    if torch_cuda is None:
        return (f"{seen}, but torch {torch_version} is a CPU build (CUDA none): "
                "pip install torch from PyPI, the CUDA build (README's GPU command)")
    why = ("a driver older than torch's CUDA needs" if smi["cuda"] and major(smi["cuda"]).isdigit()
           and int(major(smi["cuda"])) < int(major(torch_cuda)) else "see torch's warning above")
    return f"{seen}, but torch {torch_version}, built for CUDA {torch_cuda}, cannot use it ({why})"


def autoencoded(*args, env: dict | None = None, timeout: float = 300) -> str:
    """The real command line in a child process; its output, or RuntimeError with its last lines."""
    r = subprocess.run([sys.executable, "-m", "autoencoded", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO)
    if r.returncode != 0:
        tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"`autoencoded {' '.join(map(str, args[:2]))} ...` exited {r.returncode}: {tail}")
    return r.stdout + r.stderr


def fp16_evidence(p: dict) -> str:
    """What the FP16 proof saw (tensorrt_backend's parity record), in words. The proof assumes the graph's final
    Tanh->Cast rounds every output to an FP16 number; if TensorRT fuses the two and writes FP32 directly, the
    share drops while the layers are FP16 and the picture still agrees with FP32: that case is named, so a
    report tells a failed proof from an engine that computes in FP32."""
    if not p:
        return "no parity record"
    from autoencoded.live.engines.parity import FP16_MIN_PSNR
    from autoencoded.live.engines.tensorrt_build import FP16_SHARE_MIN
    layers = p.get("layers") or {}
    named = ", ".join(f"{n} {k.upper()}" for k, n in sorted(layers.items())) or "unknown"
    text = (f"{p['fp16_share']:.1%} of outputs FP16 numbers (FP32 engine {p['fp32_fp16_share']:.2%}), "
            f"layers {named}, PSNR {p['psnr_db']:.1f} dB vs FP32")
    if (p["fp16_share"] < FP16_SHARE_MIN and layers.get("fp16", 0) > layers.get("fp32", 0)
            and p["psnr_db"] >= FP16_MIN_PSNR):
        text += ("; the layers compute in FP16 and the picture agrees, so TensorRT likely fused the final "
                 "Tanh->Cast and writes FP32: the share test failed, not the engine (please send this line)")
    return text


class Smoke:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        self.size = "256x144" if self.cuda else "64x48"  # the CPU tier stays small: it runs in the tests
        self.results: list[dict] = []
        self.facts: dict = {}
        self.smi = nvidia_smi()
        self.unusable = unusable_gpu(self.smi, self.cuda, torch.__version__, torch.version.cuda)

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
                 "nvidia_smi": self.smi, "onnxruntime_packages": {k: v for k, v in ort_dists.items() if v},
                 "tensorrt": version("tensorrt") or version("tensorrt-cu12") or version("tensorrt-cu13")}
        try:
            import onnxruntime as ort

            from autoencoded.live.engines.ort_backend import cuda_build
            facts["onnxruntime"] = ort.__version__
            facts["onnxruntime_providers"] = ort.get_available_providers()
            facts["onnxruntime_cuda"] = cuda_build()
        except Exception as exc:
            facts["onnxruntime"] = f"import failed: {exc}"
        self.facts.update(facts)
        # the two CUDA majors must agree, or onnxruntime's CUDA provider cannot load next to torch's libraries
        # (its own "Require cuDNN 9.* and CUDA 13.*" line is silenced with its other red lines: this says it)
        majors = (major(facts["torch_cuda"]), major(facts.get("onnxruntime_cuda")))
        differ = "none" not in majors and majors[0] != majors[1]
        cuda = (f"CUDA majors: torch {majors[0]}, onnxruntime {majors[1]}"
                + (" (they differ: onnxruntime's CUDA provider will not load)" if differ else ""))
        gpus = ", ".join(facts["gpus"]) or "no CUDA GPU"
        line = (f"{cuda}; torch {facts['torch']}, onnxruntime {facts.get('onnxruntime')} "
                f"{facts.get('onnxruntime_providers')}, tensorrt {facts['tensorrt']}; {gpus}")
        if all(ort_dists.values()):
            raise RuntimeError("onnxruntime and onnxruntime-gpu are both installed (microsoft/onnxruntime#26996): "
                               f"pip uninstall -y onnxruntime onnxruntime-gpu && pip install -e '.[gpu]' | {line}")
        if self.unusable:
            raise RuntimeError(f"{self.unusable} | {line}")
        return line

    # 2 ------------------------------------------------------------------------------------------
    def training(self) -> str:
        from autoencoded.live.assets import DEMO_CLIP
        ds, run = self.work / "ds", self.work / "run"
        autoencoded("prepare", DEMO_CLIP, "-o", ds, "--size", self.size, "--max-frames", 48, "--overwrite")
        t0 = time.perf_counter()
        autoencoded("train", ds, "-o", run, "--steps", 2, *self._train_args())
        plain = time.perf_counter() - t0
        autoencoded("train", ds, "-o", run, "--resume", "--steps", 4, *self._train_args())
        self._steps_ran(run, 4)
        return f"{self.device}: 2 steps {plain:.0f} s, resumed to step 4"

    def _train_args(self) -> list:
        return ["--device", self.device, "--batch", 8, "--checkpoint-every", 2, "--no-progress"]

    @staticmethod
    def _steps_ran(run: Path, last: int) -> list[dict]:
        """The run's step records, which must end at `last` with finite losses."""
        metrics = [m for line in (run / "metrics.jsonl").read_text().splitlines()
                   if "step" in (m := json.loads(line)) and "kl" in m]
        if not metrics or metrics[-1]["step"] != last:
            raise RuntimeError(f"the run ended at step {metrics[-1]['step'] if metrics else 0}, not {last}")
        bad = [m["step"] for m in metrics if not np.isfinite(m["kl"])]
        if bad:
            raise RuntimeError(f"non-finite losses at steps {bad}")
        return metrics

    # 3 ------------------------------------------------------------------------------------------
    def compiled_training(self) -> str:
        if not self.cuda:
            raise Skip("CPU tier: --compile on the CPU is tests/test_train.py's "
                       "test_compiled_training_crosses_the_adversarial_switch_on_the_cpu")
        run = self.work / "run-compiled"
        t0 = time.perf_counter()
        # 2 pixel-led steps, then 2 with the discriminator: the step whose retained backward a compiled graph
        # with donated buffers refused
        autoencoded("train", self.work / "ds", "-o", run, "--steps", 4, "--adversarial-start", 0.5, "--compile",
                    *self._train_args(), timeout=600)
        metrics = self._steps_ran(run, 4)
        adversarial = [m["step"] for m in metrics if m.get("adversarial")]
        if adversarial != [3, 4]:
            raise RuntimeError(f"the discriminator took part at steps {adversarial}, not 3 and 4")
        return f"cuda --compile: 4 steps (the discriminator from step 3) in {time.perf_counter() - t0:.0f} s"

    # 4 ------------------------------------------------------------------------------------------
    def export(self) -> str:
        # the timeout is a hang guard: export --verify and its memory took over 5 minutes on a loaded 2-core host
        out = autoencoded("export", self.work / "run", "-o", self.work / "pack", "--which", "latest", "--verify",
                          "--frames", self.work / "ds", "--overwrite", timeout=900)
        return next((line for line in out.splitlines() if line.startswith("verify")), "verified").strip()

    # 5 ------------------------------------------------------------------------------------------
    def torch_vs_ort_cuda(self) -> str:
        if not self.cuda:
            raise Skip("no CUDA GPU")
        from autoencoded.live.engines.ort_backend import OnnxRuntimeEngine, cuda_available
        from autoencoded.live.engines.pack import read_pack
        from autoencoded.live.engines.parity import load_frames
        from autoencoded.live.engines.torch_backend import TorchEngine
        if not cuda_available():
            raise RuntimeError("onnxruntime has no CUDAExecutionProvider (is the `gpu` extra installed?)")
        pack = read_pack(self.work / "pack")
        frames, _ = load_frames(self.work / "ds", pack.width, pack.height, n=MAX_BATCH)
        # FP32 against FP32: torch's cuDNN convolutions default to TF32, and so does ONNX Runtime's CUDA
        # provider (use_tf32, cuda_execution_provider_info.h), which the 1e-3 latent tolerance would not survive
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            with OnnxRuntimeEngine(pack, device="cuda", tf32=False) as o, \
                    TorchEngine(pack.meta["source_checkpoint"], device="cuda") as t:
                mo, _ = o.encode(frames)
                mt, _ = t.encode(frames)
                diff = float(np.abs(mo - mt).max())
                img = int(np.abs(o.reconstruct(frames).astype(int) - t.reconstruct(frames).astype(int)).max())
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
        if diff > 1e-3 or img > 2:
            raise RuntimeError(f"latent max abs {diff:.2e}, image max {img} levels (FP32, TF32 off on both sides)")
        return f"{o.name} vs torch cuda, FP32 (TF32 off): latent max abs {diff:.2e}, image max {img} levels"

    # 6 ------------------------------------------------------------------------------------------
    def tensorrt(self) -> str:
        from autoencoded.live.engines import tensorrt_unavailable
        reason = tensorrt_unavailable()
        if reason:
            raise Skip(reason)
        from autoencoded.live.engines.pack import read_pack
        from autoencoded.live.engines.parity import load_frames
        from autoencoded.live.engines.tensorrt_backend import TensorRTEngine
        pack = read_pack(self.work / "pack")
        frames, _ = load_frames(self.work / "ds", pack.width, pack.height, n=MAX_BATCH)
        lines: list[str] = []
        self.facts["tensorrt_log"] = lines
        with TensorRTEngine(pack, max_batch=MAX_BATCH, log=lines.append, parity_frames=frames) as e:
            p = e.parity or {}
            self.facts["tensorrt_parity"] = p
            graphs = {k: r.graph_error for k, r in e.runners.items() if r.graph is None}
            if e.precision != "fp16" or not p.get("ok"):
                raise RuntimeError(f"FP16 engine not used ({p.get('reason')}); {fp16_evidence(p)}")
            if graphs:
                raise RuntimeError(f"CUDA graph capture failed: {graphs}")
        return f"{e.name}: {fp16_evidence(p)}"

    # 7 ------------------------------------------------------------------------------------------
    def batch_sizes(self) -> str:
        from autoencoded.live.engines import open_engine
        from autoencoded.live.engines.ort_backend import OnnxRuntimeEngine
        from autoencoded.live.engines.pack import read_pack
        from autoencoded.live.engines.parity import load_frames
        pack = read_pack(self.work / "pack")
        frames, _ = load_frames(self.work / "ds", pack.width, pack.height, n=MAX_BATCH)
        with OnnxRuntimeEngine(pack, device="cpu") as ref_engine:
            ref = ref_engine.reconstruct(frames)
        worst = {}
        with open_engine(pack.path, "auto", log=lambda s: None, max_batch=MAX_BATCH) as e:
            for n in (MAX_BATCH, 1, 3, 1):
                out = e.reconstruct(frames[:n])
                worst[n] = max(worst.get(n, 0.0), float(np.abs(out.astype(int) - ref[:n].astype(int)).mean()))
            name = e.name
        if max(worst.values()) > 3.0:
            raise RuntimeError(f"mean abs error against ONNX Runtime FP32 by batch: {worst}")
        return f"{name}: mean abs error against FP32 by batch size " + ", ".join(f"{k}: {v:.2f}" for k, v in worst.items())

    # 8 ------------------------------------------------------------------------------------------
    def second_engine_on_a_thread(self) -> str:
        from autoencoded.live.engines import open_engine
        from autoencoded.live.engines.parity import load_frames
        first = open_engine(self.work / "pack", "auto", log=lambda s: None, max_batch=MAX_BATCH)
        frames, _ = load_frames(self.work / "ds", first.width, first.height, n=2)
        before = first.reconstruct(frames[:1])
        box: dict = {}

        def load():
            try:
                box["engine"] = open_engine(self.work / "pack", "auto", log=lambda s: None, max_batch=MAX_BATCH)
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

    # 9 ------------------------------------------------------------------------------------------
    def bench(self) -> str:
        out = self.work / "bench.json"
        autoencoded("bench", "--model", self.work / "pack", "--seconds", 1.0 if self.cuda else 0.1,
                    "--max-batch", MAX_BATCH, "--json", out, timeout=600)
        rows = json.loads(out.read_text())["results"]
        self.facts["bench"] = rows
        return "; ".join(f"{r['backend']}: {r['batch1']['fps']:.0f} fps at batch 1" if "batch1" in r
                         else f"{r['backend']}: skipped ({r['skipped'][:80]})" for r in rows)

    # 10 -----------------------------------------------------------------------------------------
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
    def blocked():
        raise Skip("torch cannot use the GPU nvidia-smi sees (see environment): the CPU tier would pass with "
                   "the GPU paths never run")

    for name, fn in (("environment", smoke.environment), ("training", smoke.training),
                     ("training --compile", smoke.compiled_training), ("export --verify", smoke.export),
                     ("torch vs onnxruntime CUDA", smoke.torch_vs_ort_cuda), ("tensorrt fp16", smoke.tensorrt),
                     (f"batch sizes {MAX_BATCH}, 1, 3, 1", smoke.batch_sizes),
                     ("second engine on a thread", smoke.second_engine_on_a_thread), ("bench", smoke.bench),
                     ("ddp over nccl", smoke.ddp)):
        smoke.check(name, blocked if smoke.unusable and name != "environment" else fn)
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
