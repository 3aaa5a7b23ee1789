"""Naming a model (issue 23 item 25): "demo" is the bundled model wherever a model is named (--model, the web
remote's picker, OSC /model), even beside a folder called demo (the repository has one: the recipe), and a
hot swap says which model it now plays."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from autoencoded.cli import main
from autoencoded.live.assets import DEMO_MODEL_DIR
from autoencoded.live.engines import model_name, resolve_model


def _recipe_folder(where):
    """A folder named demo that is not a model pack, as in the repository (demo/ holds the demo's recipe)."""
    (where / "demo").mkdir()
    (where / "demo" / "README.md").write_text("the demo model's recipe\n")


def test_demo_names_the_bundled_model(tmp_path, monkeypatch, capsys):
    """`--model demo` resolved to ./demo and failed: "demo: neither a model pack ... nor a run folder"."""
    _recipe_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert resolve_model("demo") == resolve_model(None) == ("pack", DEMO_MODEL_DIR)
    assert model_name(None) == model_name("demo") == "demo" and model_name("models/bbb") == "models/bbb"
    assert main(["live", "--model", "demo", "--input", "demo", "--output", "null", "--duration", "0.5",
                 "--osc-port", "0", "--web", "0"]) == 0, capsys.readouterr().err
    # the folder is still reachable by its path
    assert main(["live", "--model", "./demo", "--input", "demo", "--output", "null", "--duration", "0.5",
                 "--osc-port", "0", "--web", "0"]) == 2
    assert "demo: neither a model pack" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_web_pickers_demo_swaps_back_and_the_swap_names_the_model(tmp_path):
    """The picker suggests "demo", which failed (./demo); there was no name that swapped back to the bundled
    model; and a swap said "now playing onnxruntime (...)", not which model."""
    _recipe_folder(tmp_path)
    port = _free_port()
    err_path = tmp_path / "live.err"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "autoencoded", "live", "--input", "demo", "--output", "null",
                                 "--size", "256x144", "--osc-port", "0", "--web", str(port), "--duration", "300"],
                                stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path, start_new_session=True,
                                env=dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config")))

    def log() -> str:
        return err_path.read_bytes().decode(errors="replace")

    def wait_log(text: str, count: int = 1) -> None:
        deadline = time.monotonic() + 120
        while log().count(text) < count:
            assert proc.poll() is None and time.monotonic() < deadline, log()[-2000:]
            time.sleep(0.05)

    try:
        wait_log("web: remote on")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=60) as http:
            assert http.post("/api/v1/model", json={"model": str(DEMO_MODEL_DIR)}).status_code == 202
            wait_log(f"model: now playing {DEMO_MODEL_DIR} on onnxruntime (")
            assert http.post("/api/v1/model", json={"model": "demo"}).status_code == 202  # back to the bundled one
            wait_log("model: now playing demo on onnxruntime (")
            assert "could not load" not in log() and http.get("/api/v1/status").json()["model_error"] == ""
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
