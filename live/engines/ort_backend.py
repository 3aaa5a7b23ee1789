"""The onnxruntime backend: CUDA execution provider when onnxruntime-gpu has one, else the CPU provider.

CPU sessions use one intra-op thread per physical core but one (leaving that core to the rest of the live
loop: decoding, upscaling, the encoder, and to OBS on the same machine), never spin (ONNX Runtime's default
keeps idle workers busy-waiting, which steals the CPU from those very threads: docs/speed.md), full graph
optimisation and sequential execution (the fastest for these small conv nets on 2-8 cores). reconstruct()
runs one fused graph (encoder and decoder merged in memory, mu wired to z), so a live frame costs a single
session call.
A CUDA provider that fails to load (missing cuDNN, driver mismatch) raises, naming the CUDA the wheel is
built for (ONNX Runtime's own "Require cuDNN 9.* and CUDA 13.*" line is silenced with its other red lines);
`open_engine` then runs the CPU provider and says why in one line, never silently. The CUDA provider runs
FP32 convolutions on TF32 tensor cores by default (use_tf32, on unless set: cuda_execution_provider_info.h);
`tf32=False` asks for FP32, as a parity check against FP32 must.

ONNX Runtime comes from the `cpu` extra (onnxruntime) or the `gpu` extra (onnxruntime-gpu), never both;
without either, importing this module is one line naming them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from autoencoded.errors import UserError, one_line
from autoencoded.extras import pip_install

try:
    import onnxruntime as ort
except ModuleNotFoundError as _exc:
    if _exc.name != "onnxruntime":
        raise
    raise UserError(f"ONNX Runtime is not installed: {pip_install('cpu')} "
                    f"(or {pip_install('gpu')} on an NVIDIA machine)") from None
from autoencoded.live.engines.base import Engine, finite_images
from autoencoded.live.engines.frames import from_model_output, to_model_input
from autoencoded.live.engines.pack import FUSED_IN, FUSED_OUT, ModelPack

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads share one core's units)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for c in cpus:
        base = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            cores.add((base.joinpath("physical_package_id").read_text().strip(),
                       base.joinpath("core_id").read_text().strip()))
        except OSError:
            cores.add(("?", str(c)))
    return max(1, min(len(cores), len(cpus)))


def cpu_threads() -> int:
    """Intra-op threads for a CPU session: every physical core but one (at least one)."""
    return max(1, physical_cores() - 1)


def cuda_available() -> bool:
    return CUDA_EP in ort.get_available_providers()


def cuda_build() -> str | None:
    """The CUDA version this onnxruntime is built for ("13.0"), None for a CPU build (its package info has no
    cuda_version: onnxruntime/capi/onnxruntime_validation.py)."""
    from onnxruntime.capi import build_and_package_info
    return getattr(build_and_package_info, "cuda_version", None) or None


class OnnxRuntimeEngine(Engine):
    def __init__(self, pack: ModelPack, device: str = "auto", threads: int | None = None, spin: bool = False,
                 tf32: bool = True) -> None:
        """`threads` and `spin` set the CPU thread pool (benchmarks compare; the defaults are the measured
        best next to the rest of the live loop); `tf32=False` keeps the CUDA provider's FP32 in FP32."""
        if device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"device must be auto, cuda or cpu, not {device!r}")
        use_cuda = device == "cuda" or (device == "auto" and cuda_available())
        if use_cuda and not cuda_available():
            raise UserError("onnxruntime has no CUDA execution provider here "
                            f"({pip_install('gpu')} for onnxruntime-gpu, and a CUDA GPU)")
        self.pack = pack
        self.width, self.height, self.z_dim = pack.width, pack.height, pack.z_dim
        self.plan = pack.plan
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        self.threads = threads or cpu_threads()
        opts.intra_op_num_threads = self.threads
        # idle workers sleep instead of spinning (the keys of onnxruntime_session_options_config_keys.h)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "1" if spin else "0")
        opts.log_severity_level = 3
        cuda_options = {"cudnn_conv_algo_search": "EXHAUSTIVE", **({} if tf32 else {"use_tf32": "0"})}
        providers: list = [(CUDA_EP, cuda_options), CPU_EP] if use_cuda else [CPU_EP]
        self._opts, self._providers = opts, providers
        if use_cuda:
            # a CUDA provider that cannot load prints several red lines of its own; this backend reports the
            # failure itself, in one line (open_engine then runs the CPU provider and says so)
            ort.set_default_logger_severity(4)
            # torch first: on Linux it loads the CUDA and cuDNN libraries of its wheels globally, where
            # onnxruntime-gpu's provider finds them (ONNX Runtime's "compatibility with PyTorch")
            import torch  # noqa: F401
        # every run shares these options, so that interrupt() can stop one from another thread
        self._run = ort.RunOptions()
        self._run.log_severity_level = 4  # an interrupted run is expected: no error line from onnxruntime
        try:
            self.enc = self._session(pack.model_bytes("encoder"))
            self.dec = self._session(pack.model_bytes("decoder"))
            self.fused = self._session(pack.fused().SerializeToString())
        except UserError:
            raise
        except Exception as exc:  # onnxruntime's own errors (InvalidGraph, Fail, ...) about the pack
            raise UserError(f"{pack.path}: onnxruntime cannot load the model ({one_line(exc)})") from None
        self.provider = self.enc.get_providers()[0]
        if use_cuda and self.provider != CUDA_EP:
            raise UserError(f"onnxruntime {ort.__version__}'s CUDA execution provider failed to load (it fell "
                            f"back to {self.provider}): it is built for CUDA {cuda_build() or '?'}, and that CUDA's "
                            "libraries or cuDNN are missing or of another major")
        self.name = (f"onnxruntime ({self.provider})" if self.provider == CUDA_EP
                     else f"onnxruntime ({self.provider}, {self.threads} thread{'s' if self.threads != 1 else ''})")

    def _session(self, model: bytes) -> ort.InferenceSession:
        return ort.InferenceSession(model, sess_options=self._opts, providers=self._providers)

    def _input(self, frames: np.ndarray) -> np.ndarray:
        return to_model_input(self.check_frames(frames))

    def encode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, log_sigma = self.enc.run(["mu", "log_sigma"], {"image": self._input(frames)}, self._run)
        return mu, log_sigma

    def decode(self, z: np.ndarray) -> np.ndarray:
        z = self.check_latents(z)
        return from_model_output(finite_images(self.dec.run(["image"], {"z": z}, self._run)[0]))

    def reconstruct(self, frames: np.ndarray) -> np.ndarray:
        return from_model_output(finite_images(
            self.fused.run([FUSED_OUT], {FUSED_IN: self._input(frames)}, self._run)[0]))

    def interrupt(self) -> bool:
        """onnxruntime checks this flag between operators (inside loops too): the run raises at once."""
        self._run.terminate = True
        return True

    def close(self) -> None:
        self.enc = self.dec = self.fused = None  # type: ignore[assignment]
