"""torch.compile of the training networks (`train --compile`), on CUDA and on the CPU.

Two things a bare torch.compile(module) leaves to the first training step, where they fail in a traceback:

- inductor builds its kernels with a compiler it finds at run time: on the CPU a C++ compiler
  (torch._inductor.config.cpp.cxx: $CXX, else g++), on CUDA a C compiler for Triton's launcher ($CC, else gcc,
  else clang, and Python's headers: triton/runtime/build.py). `missing_compiler` says which is missing before
  the run starts.
- the adversarial step takes three gradients from one forward pass (three losses, three optimizers), so the
  encoder's and decoder's keep the graph (retain_graph=True). AOTAutograd donates the backward's saved
  activations by default (torch._functorch.config.donated_buffer), and a backward compiled with donated buffers
  refuses retain_graph=True ("This backward function was compiled with non-empty donated buffers ..."): the
  pixel-led phase ran, and the run died at the step the discriminator joined. The setting is read when a graph
  compiles and again in every compiled backward (torch/_functorch/_aot_autograd/runtime_wrappers.py), so it is
  switched off for the process, not around one call.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import torch
import torch._functorch.config as functorch_config
from torch import nn

from autoencoded.errors import UserError


def _python_headers() -> Path:
    # the include folder Triton's build uses (Debian's posix_local scheme has no headers of its own)
    scheme = sysconfig.get_default_scheme()
    return Path(sysconfig.get_paths(scheme="posix_prefix" if scheme == "posix_local" else scheme)["include"])


def missing_compiler(device_type: str) -> str | None:
    """Why torch.compile cannot build kernels for `device_type` here, or None."""
    if device_type == "cpu":
        from torch._inductor import config
        from torch._inductor.cpp_builder import get_cpp_compiler
        from torch._inductor.exc import InvalidCxxCompiler
        try:
            get_cpp_compiler()  # inductor's own search
        except InvalidCxxCompiler:
            tried = ", ".join(str(c) for c in config.cpp.cxx if c)
            return f"no C++ compiler for inductor's CPU kernels (tried {tried}): install g++ or set CXX"
        return None
    if device_type == "cuda":
        cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")
        if not cc or not shutil.which(cc):
            return ("no C compiler for Triton's CUDA kernels (tried $CC, gcc, clang): install gcc "
                    "(apt install build-essential) or set CC")
        headers = _python_headers()
        if not (headers / "Python.h").is_file():
            return f"Triton builds against Python's headers and {headers} has no Python.h: install python3-dev"
        return None
    return None


def compile_networks(nets: dict[str, nn.Module], device_type: str) -> dict[str, nn.Module]:
    """The compiled form of each network (the modules themselves keep the weights and are what is saved)."""
    if device_type not in ("cuda", "cpu"):
        raise UserError(f"--compile runs on CUDA or the CPU, not on {device_type}")
    reason = missing_compiler(device_type)
    if reason:
        raise UserError(f"--compile: {reason}")
    functorch_config.donated_buffer = False  # the retained adversarial backward (see the module doc)
    return {k: torch.compile(m) for k, m in nets.items()}
