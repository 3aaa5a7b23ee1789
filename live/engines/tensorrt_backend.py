"""The TensorRT backend (TensorRT 10 and 11, name-based API): FP16 engines built from the pack, cached per GPU.

- three engines: encoder, decoder and the fused encoder->decoder graph (reconstruct() is one launch);
- preallocated device buffers (torch CUDA tensors) sized for max_batch, bound once by address;
- batch 1 (the live path) replays a CUDA graph of the engine launch, on an execution context of its own;
- on a fresh FP16 build, parity against an FP32 engine on real frames (PSNR >= 40 dB, no NaN, and the
  outputs FP16 numbers: proof that the engine computes in FP16, see tensorrt_build); when it fails the
  backend says so and runs FP32 engines instead.
Only imported when tensorrt is installed and a CUDA GPU is present (open_engine checks).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorrt as trt
import torch

from autoencoded.live.engines.base import Engine, finite_images
from autoencoded.live.engines.pack import FUSED_IN, FUSED_OUT, ModelPack
from autoencoded.training.model import frames_to_input, output_to_frames


class _Runner:
    """One engine, its device buffers, and two execution contexts on one stream.

    The engine has two optimisation profiles (tensorrt_build.batch_profiles). Batch 1, the live path, runs
    on a context of its own, bound to the batch-1 profile: its input shape never changes after capture, so
    the CUDA graph replays exactly the launch it recorded. Every other batch size runs on the second context
    (profile 1), whose shape changes never touch the captured one.
    """

    def __init__(self, engine, max_batch: int, stream: torch.cuda.Stream, use_graph: bool) -> None:
        self.engine = engine
        self.stream = stream
        self.max_batch = max_batch
        self.inputs: list[str] = []
        self.buffers: dict[str, torch.Tensor] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(engine.get_tensor_shape(name))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs.append(name)
            if trt.nptype(engine.get_tensor_dtype(name)) != np.float32:
                raise RuntimeError(f"engine tensor {name} is not float32")
            self.buffers[name] = torch.empty((max_batch, *shape[1:]), dtype=torch.float32, device="cuda")
        self.single = self._context(profile=0, batch=1)  # batch 1 only: the CUDA graph's
        self.context = self._context(profile=1, batch=None)  # every batch size
        self.batch = -1
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_error: str | None = None
        if use_graph:
            self._capture()

    def _context(self, profile: int, batch: int | None):
        ctx = self.engine.create_execution_context()
        if not ctx.set_optimization_profile_async(profile, self.stream.cuda_stream):
            raise RuntimeError(f"TensorRT cannot select optimisation profile {profile}")
        for name, buf in self.buffers.items():
            ctx.set_tensor_address(name, buf.data_ptr())
        if batch is not None:
            for name in self.inputs:
                ctx.set_input_shape(name, (batch, *self.buffers[name].shape[1:]))
        return ctx

    def _set_batch(self, n: int) -> None:
        if n != self.batch:
            for name in self.inputs:
                self.context.set_input_shape(name, (n, *self.buffers[name].shape[1:]))
            self.batch = n

    def _launch(self, ctx) -> None:
        if not ctx.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")

    def _capture(self) -> None:
        try:
            with torch.cuda.stream(self.stream):
                self._launch(self.single)  # TensorRT needs one launch before capture (deferred shape updates)
                self.stream.synchronize()
                graph = torch.cuda.CUDAGraph()
                # thread_local: a hot-swap builds and captures a second engine on a loader thread while
                # this one keeps running on the engine thread; "global" capture would fail on (and fail)
                # that other thread's CUDA calls
                with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                    self._launch(self.single)
            self.graph = graph
        except Exception as exc:  # capture unsupported here: plain launches still work
            self.graph, self.graph_error = None, f"{type(exc).__name__}: {exc}"
            self.stream.synchronize()

    def run(self, n: int) -> None:
        """Run on the first n rows of the input buffers (the caller filled them on self.stream)."""
        if n == 1:
            if self.graph is not None:
                self.graph.replay()
            else:
                self._launch(self.single)
        else:
            self._set_batch(n)
            self._launch(self.context)

    def precisions(self) -> dict[str, int]:
        """Layers by the precision they compute in, as the engine inspector reports them."""
        from autoencoded.live.engines.tensorrt_build import layer_precisions
        try:
            inspector = self.engine.create_engine_inspector()
            inspector.execution_context = self.single  # shapes set: formats known, not "N/A"
            return layer_precisions(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        except Exception:  # the inspector is a report, never a reason to stop
            return {}


class _Builds:
    """Where the pack's engines come from: the engine cache (per GPU, live/engines/cache.py), or a build that
    is cached. Lives only while TensorRTEngine opens (it holds the ONNX bytes)."""

    def __init__(self, pack: ModelPack, max_batch: int, runtime, trt_logger, log: Callable[[str], object],
                 cache_root=None) -> None:
        from autoencoded.live.engines.cache import EngineCache
        from autoencoded.live.engines.tensorrt_build import batch_profiles, device_identity

        self.pack, self.runtime, self.trt_logger, self.log = pack, runtime, trt_logger, log
        self.cache = EngineCache(cache_root)
        self.identity = device_identity()
        h, w, z, b = pack.height, pack.width, pack.z_dim, max_batch
        self.parts = {
            "encoder": (pack.model_bytes("encoder"), batch_profiles("image", (3, h, w), b)),
            "decoder": (pack.model_bytes("decoder"), batch_profiles("z", (z,), b)),
            "fused": (pack.fused().SerializeToString(), batch_profiles(FUSED_IN, (3, h, w), b)),
        }

    def key(self, part: str, precision: str) -> str:
        from autoencoded.live.engines.tensorrt_build import make_key
        return make_key(self.pack.model_hash, part, precision, self.parts[part][1], self.identity)

    def load(self, part: str, precision: str) -> tuple[object, dict, bool]:
        """-> (engine, what was stored beside it, whether it was built now)."""
        from autoencoded.live.engines.tensorrt_build import cached_engine
        onnx_bytes, profiles = self.parts[part]
        key = self.key(part, precision)
        for attempt in range(2):
            data, extra, built = cached_engine(self.cache, key, onnx_bytes, profiles, self.log, self.trt_logger)
            engine = self.runtime.deserialize_cuda_engine(data)
            if engine is not None:
                return engine, extra, built
            self.cache.discard(key)  # valid header but the runtime refuses it: rebuild once
            if attempt:
                raise RuntimeError(f"TensorRT cannot deserialize the {part} engine it just built")
        raise AssertionError("unreachable")

    def remember_parity(self, parity: dict) -> None:
        """The FP16 verdict stored beside the fused FP16 engine: no re-check next start."""
        key = self.key("fused", "fp16")
        payload = self.cache.load(key)[0]
        if payload is not None:
            self.cache.store(key, payload, {"parity": parity})


class TensorRTEngine(Engine):
    def __init__(self, pack: ModelPack, precision: str = "fp16", max_batch: int = 16,
                 log: Callable[[str], object] = print, cache_root=None, parity_frames: np.ndarray | None = None,
                 cuda_graphs: bool = True) -> None:
        self.pack, self.log = pack, log
        self.width, self.height, self.z_dim = pack.width, pack.height, pack.z_dim
        self.plan = pack.plan
        self.max_batch = max_batch
        self.device = torch.device("cuda")
        self.stream = torch.cuda.Stream()
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        builds = _Builds(pack, max_batch, self._runtime, self._trt_logger, log, cache_root)
        self.precision, self.parity = precision, None
        fused, extra, built = builds.load("fused", precision)
        if precision == "fp16":
            fused = self._checked_fp16(builds, fused, extra.get("parity") if not built else None, parity_frames)
        self.engines = {"fused": fused, "encoder": builds.load("encoder", self.precision)[0],
                        "decoder": builds.load("decoder", self.precision)[0]}
        self.runners = {k: _Runner(e, max_batch, self.stream, cuda_graphs) for k, e in self.engines.items()}
        graphs = all(r.graph is not None for r in self.runners.values())
        self.name = (f"tensorrt {self.precision} ({builds.identity['gpu_name']}, "
                     f"{'CUDA graphs' if graphs else 'no CUDA graphs'})")

    def _checked_fp16(self, builds: _Builds, fused, parity: dict | None, frames: np.ndarray | None):
        """The fused FP16 engine when it passes parity against FP32 on real frames (`parity`: the verdict
        cached beside it, None for a fresh build), else the FP32 one, said in one line. Sets self.parity
        and, on a failure, self.precision."""
        if not parity:
            parity = self._parity(fused, builds.load("fused", "fp32")[0], frames)
            builds.remember_parity(parity)
            layers = ", ".join(f"{n} {k.upper()}" for k, n in sorted(parity["layers"].items())) or "unknown"
            self.log(f"tensorrt: FP16 check: {parity['fp16_share']:.1%} of outputs are FP16 numbers "
                     f"(FP32 engine: {parity['fp32_fp16_share']:.2%}); layers: {layers}; PSNR "
                     f"{parity['psnr_db']:.1f} dB against FP32")
        self.parity = parity
        if parity["ok"]:
            return fused
        self.log(f"tensorrt: FP16 fails parity against FP32 on real frames ({parity['reason']}); "
                 "running FP32 engines instead")
        self.precision = "fp32"
        return builds.load("fused", "fp32")[0]

    # --- parity -------------------------------------------------------------------------------------
    def _parity(self, fp16_engine, fp32_engine, frames: np.ndarray | None) -> dict:
        from autoencoded.live.assets import DEMO_CLIP
        from autoencoded.live.engines.parity import FP16_MIN_PSNR, compare, load_frames
        from autoencoded.live.engines.tensorrt_build import FP16_SHARE_MIN, fp16_share
        if frames is None:
            frames, _ = load_frames(DEMO_CLIP if DEMO_CLIP.is_file() else None, self.width, self.height, n=8)
        frames = frames[: self.max_batch]
        outs, layers = [], {}
        for engine in (fp16_engine, fp32_engine):
            runner = _Runner(engine, self.max_batch, self.stream, use_graph=False)
            if engine is fp16_engine:
                layers = runner.precisions()
            with torch.cuda.stream(self.stream):
                x = frames_to_input(torch.from_numpy(np.ascontiguousarray(frames)).to(self.device))
                runner.buffers[FUSED_IN][: len(frames)].copy_(x)
                runner.run(len(frames))
                outs.append(runner.buffers[FUSED_OUT][: len(frames)].float().cpu().numpy())
        r = compare(outs[1], outs[0])
        share = fp16_share(outs[0])
        reason = None
        if not r["finite"]:
            reason = "NaN/Inf in the FP16 output"
        elif share < FP16_SHARE_MIN:
            reason = (f"the fp16 engine computes in FP32: {share:.1%} of its outputs are FP16 numbers "
                      f"(FP32: {fp16_share(outs[1]):.2%})")
        elif r["psnr_db"] < FP16_MIN_PSNR:
            reason = f"PSNR {r['psnr_db']:.1f} dB < {FP16_MIN_PSNR:.0f} dB"
        return {**r, "ok": reason is None, "reason": reason, "n_frames": len(frames), "fp16_share": share,
                "fp32_fp16_share": fp16_share(outs[1]), "layers": layers}

    # --- Engine interface ---------------------------------------------------------------------------
    def _chunks(self, n: int):
        for i in range(0, n, self.max_batch):
            yield i, min(n, i + self.max_batch)

    @torch.inference_mode()
    def encode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames = self.check_frames(frames)
        r = self.runners["encoder"]
        mus, sigmas = [], []
        with torch.cuda.stream(self.stream):
            for a, b in self._chunks(len(frames)):
                r.buffers["image"][: b - a].copy_(frames_to_input(torch.from_numpy(frames[a:b]).to(self.device)))
                r.run(b - a)
                mus.append(r.buffers["mu"][: b - a].cpu().numpy())
                sigmas.append(r.buffers["log_sigma"][: b - a].cpu().numpy())
        return np.concatenate(mus), np.concatenate(sigmas)

    @torch.inference_mode()
    def decode(self, z: np.ndarray) -> np.ndarray:
        z = self.check_latents(z)
        r = self.runners["decoder"]
        out = []
        with torch.cuda.stream(self.stream):
            for a, b in self._chunks(len(z)):
                r.buffers["z"][: b - a].copy_(torch.from_numpy(z[a:b]).to(self.device))
                r.run(b - a)
                out.append(output_to_frames(finite_images(r.buffers["image"][: b - a])).cpu().numpy())
        return np.concatenate(out)

    @torch.inference_mode()
    def reconstruct(self, frames: np.ndarray) -> np.ndarray:
        frames = self.check_frames(frames)
        r = self.runners["fused"]
        out = []
        with torch.cuda.stream(self.stream):
            for a, b in self._chunks(len(frames)):
                r.buffers[FUSED_IN][: b - a].copy_(frames_to_input(torch.from_numpy(frames[a:b]).to(self.device)))
                r.run(b - a)
                out.append(output_to_frames(finite_images(r.buffers[FUSED_OUT][: b - a])).cpu().numpy())
        return np.concatenate(out)

    def close(self) -> None:
        runners = getattr(self, "runners", None)
        if runners:
            self.stream.synchronize()
            self.runners, self.engines = {}, {}
