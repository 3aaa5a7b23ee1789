"""The TensorRT backend (TensorRT 10 name-based API): FP16 engines built from the pack, cached per GPU.

- three engines: encoder, decoder and the fused encoder->decoder graph (reconstruct() is one launch);
- preallocated device buffers (torch CUDA tensors) sized for max_batch, bound once by address;
- batch 1 (the live path) replays a CUDA graph of the engine launch when capture works;
- on a fresh FP16 build, parity against an FP32 engine on real frames (PSNR >= 40 dB, no NaN); when it
  fails the backend says so and runs FP32 engines instead.
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
    """One engine + execution context + its device buffers, run on one stream."""

    def __init__(self, engine, max_batch: int, stream: torch.cuda.Stream, use_graph: bool) -> None:
        self.engine = engine
        self.context = engine.create_execution_context()
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
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())
        self.batch = -1
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_error: str | None = None
        if use_graph:
            self._capture()

    def _set_batch(self, n: int) -> None:
        if n != self.batch:
            for name in self.inputs:
                self.context.set_input_shape(name, (n, *self.buffers[name].shape[1:]))
            self.batch = n

    def _launch(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")

    def _capture(self) -> None:
        try:
            with torch.cuda.stream(self.stream):
                self._set_batch(1)
                self._launch()  # TensorRT needs one launch before capture (deferred shape updates)
                self.stream.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self.stream):
                    self._launch()
            self.graph = graph
        except Exception as exc:  # capture unsupported here: plain launches still work
            self.graph, self.graph_error = None, f"{type(exc).__name__}: {exc}"
            torch.cuda.synchronize()

    def run(self, n: int) -> None:
        """Run on the first n rows of the input buffers (the caller filled them on self.stream)."""
        if n == 1 and self.graph is not None:
            self._set_batch(1)
            self.graph.replay()
        else:
            self._set_batch(n)
            self._launch()


class TensorRTEngine(Engine):
    def __init__(self, pack: ModelPack, precision: str = "fp16", max_batch: int = 16,
                 log: Callable[[str], object] = print, cache_root=None, parity_frames: np.ndarray | None = None,
                 cuda_graphs: bool = True) -> None:
        from autoencoded.live.engines.cache import EngineCache
        from autoencoded.live.engines.tensorrt_build import cached_engine, device_identity, make_key

        self.pack, self.log = pack, log
        self.width, self.height, self.z_dim = pack.width, pack.height, pack.z_dim
        self.max_batch = max_batch
        self.device = torch.device("cuda")
        self.stream = torch.cuda.Stream()
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        cache = EngineCache(cache_root)
        identity = device_identity()
        h, w, z, b = pack.height, pack.width, pack.z_dim, max_batch
        parts = {
            "encoder": (pack.model_bytes("encoder"), {"image": ((1, 3, h, w), (1, 3, h, w), (b, 3, h, w))}),
            "decoder": (pack.model_bytes("decoder"), {"z": ((1, z), (1, z), (b, z))}),
            "fused": (pack.fused().SerializeToString(), {FUSED_IN: ((1, 3, h, w), (1, 3, h, w), (b, 3, h, w))}),
        }

        def load(part: str, prec: str) -> tuple[object, dict, bool]:
            onnx_bytes, profiles = parts[part]
            key = make_key(pack.model_hash, part, prec, profiles, identity)
            for attempt in range(2):
                data, extra, built = cached_engine(cache, key, onnx_bytes, profiles, log, self._trt_logger)
                engine = self._runtime.deserialize_cuda_engine(data)
                if engine is not None:
                    return engine, extra, built
                cache.discard(key)  # valid header but the runtime refuses it: rebuild once
                if attempt:
                    raise RuntimeError(f"TensorRT cannot deserialize the {part} engine it just built")
            raise AssertionError("unreachable")

        self.precision = precision
        fused, extra, built = load("fused", precision)
        if precision == "fp16":
            parity = extra.get("parity")
            if built or not parity:
                parity = self._parity(fused, load("fused", "fp32")[0], parity_frames)
                key = make_key(pack.model_hash, "fused", "fp16", parts["fused"][1], identity)
                payload = cache.load(key)[0]
                if payload is not None:  # remember the verdict beside the engine: no re-check next start
                    cache.store(key, payload, {"parity": parity})
            if not parity["ok"]:
                log(f"tensorrt: FP16 fails parity against FP32 on real frames ({parity['reason']}); "
                    "running FP32 engines instead")
                self.precision = "fp32"
                fused = load("fused", "fp32")[0]
            self.parity = parity
        else:
            self.parity = None
        self.engines = {"fused": fused, "encoder": load("encoder", self.precision)[0],
                        "decoder": load("decoder", self.precision)[0]}
        self.runners = {k: _Runner(e, max_batch, self.stream, cuda_graphs) for k, e in self.engines.items()}
        graphs = all(r.graph is not None for r in self.runners.values())
        self.name = (f"tensorrt {self.precision} ({identity['gpu_name']}, "
                     f"{'CUDA graphs' if graphs else 'no CUDA graphs'})")

    # --- parity -------------------------------------------------------------------------------------
    def _parity(self, fp16_engine, fp32_engine, frames: np.ndarray | None) -> dict:
        from autoencoded.live.assets import DEMO_CLIP
        from autoencoded.live.engines.parity import FP16_MIN_PSNR, compare, load_frames
        if frames is None:
            frames, _ = load_frames(DEMO_CLIP if DEMO_CLIP.is_file() else None, self.width, self.height, n=8)
        frames = frames[: self.max_batch]
        outs = []
        for engine in (fp16_engine, fp32_engine):
            runner = _Runner(engine, self.max_batch, self.stream, use_graph=False)
            with torch.cuda.stream(self.stream):
                x = frames_to_input(torch.from_numpy(np.ascontiguousarray(frames)).to(self.device))
                runner.buffers[FUSED_IN][: len(frames)].copy_(x)
                runner.run(len(frames))
                outs.append(runner.buffers[FUSED_OUT][: len(frames)].float().cpu().numpy())
        r = compare(outs[1], outs[0])
        reason = None
        if not r["finite"]:
            reason = "NaN/Inf in the FP16 output"
        elif r["psnr_db"] < FP16_MIN_PSNR:
            reason = f"PSNR {r['psnr_db']:.1f} dB < {FP16_MIN_PSNR:.0f} dB"
        return {**r, "ok": reason is None, "reason": reason, "n_frames": len(frames)}

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
