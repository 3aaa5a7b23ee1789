"""The house: one import root, and imports that run one way only (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# repository folder -> the package it installs as (pyproject's package-dir)
ROOTS = {"autoencoded": "autoencoded", "training": "autoencoded.training", "export": "autoencoded.export",
         "live": "autoencoded.live", "presets": "autoencoded.presets"}

# Layers, lowest first: a module imports only modules of its own layer or lower ones.
# Longest prefix wins; the commands sit on top.
LAYERS = [
    ("autoencoded.errors", 1), ("autoencoded.fileio", 1), ("autoencoded.media", 1), ("autoencoded.text", 1),
    ("autoencoded.sizes", 1), ("autoencoded.presets", 1), ("autoencoded", 1),
    ("autoencoded.live.assets", 1),  # where the bundled model and clip lie; imports nothing
    ("autoencoded.training.model", 2), ("autoencoded.training.weights", 2), ("autoencoded.training.archs", 2),
    ("autoencoded.live.engines", 3),
    ("autoencoded.training", 4), ("autoencoded.export", 4), ("autoencoded.live", 4),
    ("autoencoded.cli", 5), ("autoencoded.__main__", 5),
]
COMMAND_SUFFIX = "_cmd"


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    parts[0] = ROOTS[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    if module.rsplit(".", 1)[-1].endswith(COMMAND_SUFFIX):
        return 5
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for root in ROOTS for p in (REPO / root).rglob("*.py")}


def imported(path: Path, module: str, modules: set[str] | frozenset = frozenset()) -> set[str]:
    """Every project module named by an import statement in `path`, lazy imports inside functions too.
    `from pkg import mod` names pkg.mod (the package's __init__ comes along, but it is not what is used)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names}
            names.update(subs)
            if not subs <= modules:
                names.add(base)
    return {n for n in names if n == "autoencoded" or n.startswith("autoencoded.")}


def test_every_import_goes_down_the_layers():
    modules = project_modules()
    upward = []
    for module, path in modules.items():
        for target in imported(path, module, set(modules)):
            if target not in modules:  # `from pkg import name` of a non-module name
                continue
            if layer_of(target) > layer_of(module):
                upward.append(f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})")
    assert not upward, "\n".join(upward)


def test_live_subpackages_do_not_import_each_other_both_ways():
    modules = project_modules()
    edges: set[tuple[str, str]] = set()
    for module, path in modules.items():
        parts = module.split(".")
        if parts[:2] != ["autoencoded", "live"] or len(parts) < 4:
            continue
        for target in imported(path, module, set(modules)):
            tparts = target.split(".")
            if tparts[:2] == ["autoencoded", "live"] and len(tparts) >= 4 and tparts[2] != parts[2]:
                edges.add((parts[2], tparts[2]))
    both = sorted((a, b) for a, b in edges if (b, a) in edges and a < b)
    assert not both, f"live subpackages import each other both ways: {both}"


def test_no_top_level_training_export_or_live_module_is_ever_imported():
    """Import every module of the project (as the CLI and the tests do), then look at sys.modules."""
    names = sorted(m for m in project_modules() if not m.endswith("__main__"))
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as exc:\n"  # optional extras (TensorRT, NDI...) may be absent
        "        if (exc.name or '').split('.')[0] == 'autoencoded':\n"
        "            raise\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('training', 'export', 'live'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO / "tests", capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_the_wheel_holds_autoencoded_alone(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("autoencoded-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"autoencoded", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    # what the package needs at run time travels with it
    for needed in ("autoencoded/live/assets/demo_model/model.json", "autoencoded/live/assets/demo_clip.mp4",
                   "autoencoded/presets/default.toml", "autoencoded/training/model.py",
                   "autoencoded/training/assets/foreign_camera.png"):
        assert needed in names


def test_tests_share_through_helpers_not_each_other_or_private_names():
    """Tests import shared code from tests/helpers.py, never from another test module, and use only the
    public names of the project (a private name is free to change without breaking a test)."""
    bad = []
    for path in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.split(".")[0].startswith("test_"):
                    bad.append(f"{path.name} imports from {node.module}")
                if node.module.startswith("autoencoded"):
                    bad += [f"{path.name} imports {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_")]
            elif isinstance(node, ast.Import):
                bad += [f"{path.name} imports {a.name}" for a in node.names if a.name.startswith("test_")]
    assert not bad, "\n".join(bad)
