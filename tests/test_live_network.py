"""`autoencoded live` against a hostile network, through the real command and real UDP (issue 13, items 1, 2,
10, 11): address patterns that froze the show, /model floods, a model that hangs inside onnxruntime,
Ctrl-C during a load, control characters from the network, odd command-line values, IPv6."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pythonosc.osc_bundle import OscBundle

from autoencoded.cli import main
from autoencoded.live.assets import DEMO_MODEL_DIR

from helpers import doctored_pack, msg, non_loopback_ipv4, sender

REPO = Path(__file__).resolve().parents[1]


class Live:
    """`autoencoded live --input demo --output null` in a subprocess, played over OSC from `source`."""

    def __init__(self, tmp_path: Path, *args: str, host: str = "127.0.0.1", source: str = "127.0.0.1") -> None:
        self.err_path = tmp_path / "live.err"
        self.err = open(self.err_path, "wb")
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        cmd = [sys.executable, "-m", "autoencoded", "live", "--input", "demo", "--output", "null",
               "--size", "256x144", "--osc-host", host, "--osc-port", str(self.port), *args]
        # its own process group, signalled as a whole: a terminal's Ctrl-C reaches ffmpeg children too
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.err, cwd=tmp_path,
                                     env=dict(os.environ, AUTOENCODED_PRESETS=str(tmp_path)), start_new_session=True)
        self.sock = sender(source)
        self.sock.settimeout(0.5)
        self.dest = source if source != "127.0.0.1" else "127.0.0.1"
        self.wait_log("osc: listening", 120)
        self.listening_at = time.monotonic()

    @property
    def log(self) -> str:
        return self.err_path.read_bytes().decode(errors="replace")

    def wait_log(self, text: str, timeout: float = 60, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.log.count(text) < count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the log (rc {self.proc.poll()}):\n{self.log[-2000:]}")
            time.sleep(0.05)

    def send(self, address: str, *args) -> None:
        self.sock.sendto(msg(address, *args), (self.dest, self.port))

    def status(self) -> dict:
        """The /status reply: {"model": ..., "model_loading": 0|1, ...} (the pipeline's stats)."""
        for _ in range(40):
            self.send("/status")
            try:
                data, _ = self.sock.recvfrom(65536)
            except OSError:
                continue
            return {m.address[len("/status/"):]: m.params[0] for m in OscBundle(data)
                    if m.address.startswith("/status/") and m.params}
        raise AssertionError("no /status reply")

    def wait_status(self, what: str, cond, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            s = self.status()
            if cond(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {s}")
            time.sleep(0.1)

    def finish(self, sig: int | None = None, timeout: float = 120) -> int:
        if sig is not None:
            os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.sock.close()
            self.err.close()


def test_hostile_patterns_do_not_freeze_the_show(tmp_path):
    """One 44-byte packet froze the output for ~30 s and --duration was ignored (killed after 120 s)."""
    live = Live(tmp_path, "--duration", "4")
    for _ in range(10):
        live.send("/****************/****************x", 1.0)
        live.send("/{a,b}*{n,o}*/[a-z]*[!x]?*x", 1.0)
    rc = live.finish(timeout=90)
    assert rc == 0, live.log
    assert time.monotonic() - live.listening_at < 60  # 4 s of show, plus the stop
    stopped = [line for line in live.log.splitlines() if line.startswith("stopped")]
    assert stopped and int(stopped[-1].split(": ")[1].split()[0]) > 0  # frames went out


def test_model_requests_from_the_network(tmp_path):
    """A flood is one load; text from the network is printed escaped; a model that hangs inside inference
    is interrupted and passed by, a later swap still works, and Ctrl-C still stops cleanly. The sender is the
    machine's LAN address reaching `--osc-host ::` as an IPv4-mapped address, heard through an IPv4
    allow-list."""
    ip = non_loopback_ipv4()
    host_args = {"host": "::", "source": ip} if ip and socket.has_ipv6 else {}
    allow = ("--osc-allow", f"{ip}/32") if host_args else ()
    hang = doctored_pack(DEMO_MODEL_DIR, tmp_path / "hang", "hang")
    live = Live(tmp_path, *allow, **host_args)
    try:
        live.wait_status("the show to run", lambda s: s["frames_out"] > 0)
        for _ in range(20):
            live.send("/model", str(DEMO_MODEL_DIR))
        live.wait_log("model: now playing")
        live.wait_status("the flood to settle", lambda s: not s["model_loading"])
        time.sleep(1.0)
        assert live.log.count("model: now playing") == 1  # one load won, none queued behind it

        live.send("/model", "\x1b[2J\x1b[Hpwned")
        live.wait_log("could not load")
        assert "\\x1b[2J\\x1b[Hpwned" in live.log and "\x1b" not in live.log

        live.send("/model", str(hang))
        live.wait_log("model: now playing", count=2)
        live.wait_log("has been inside one inference", timeout=60)
        hung = live.wait_status("passthrough", lambda s: s["engine_hung"] == 1)
        live.wait_status("frames passing", lambda s: s["frames_out"] > hung["frames_out"] + 5)

        live.send("/model", str(DEMO_MODEL_DIR))
        live.wait_log("model: now playing", count=3)
        swapped = live.wait_status("the model back", lambda s: s["engine_hung"] == 0)
        live.wait_status("frames from the model", lambda s: s["frames_processed"] > swapped["frames_processed"] + 5)
    finally:
        rc = live.finish(signal.SIGINT)
    assert rc in (0, 130) and "terminate called" not in live.log, live.log[-2000:]
    assert "stopped (interrupted)" in live.log


def test_ctrl_c_during_a_model_load_exits_cleanly(tmp_path):
    """Stopping while onnxruntime was building a session aborted: "terminate called without an active
    exception", exit 134."""
    # ~3 s to open on the 2-core CPU: a load of 0.75 s could begin and end between two status figures
    slow = doctored_pack(DEMO_MODEL_DIR, tmp_path / "slow", "slow", size=2500)
    live = Live(tmp_path)
    try:
        live.wait_status("the show to run", lambda s: s["frames_out"] > 0)
        live.send("/model", str(slow))
        live.wait_status("the load to start", lambda s: s["model_loading"] == 1)
    finally:
        rc = live.finish(signal.SIGINT)
    assert rc in (0, 130) and "terminate called" not in live.log, live.log[-2000:]
    assert "stopped (interrupted)" in live.log


@pytest.mark.parametrize("args", [
    ["--input", "camera:\u00b2"], ["--input", "camera:\u0661"], ["--input", "camera:-1"],
    ["--input", "camera:\x1b[2J"],
    ["--osc-feedback", "127.0.0.1:\u00b2"], ["--osc-feedback", "127.0.0.1:\u0669\u0660\u0660\u0661"],
    ["--osc-feedback", "bad\x1b[2Jhost:9001"], ["--osc-feedback", "[::1:9001"],
    ["--osc-allow", "10.0.0.\x1b[2J"],
    ["--preset", "odd-cc"],
])
def test_odd_values_are_one_line_and_exit_2(args, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOENCODED_PRESETS", str(tmp_path))
    (tmp_path / "odd-cc.toml").write_text('[midi.cc]\n"\u00b2" = "noise"\n', encoding="utf-8")
    base = ["live", "--output", "null", "--duration", "1", "--osc-port", "0"]
    assert main([*base, *(["--input", "demo"] if "--input" not in args else []), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "\x1b" not in err and "internal error" not in err


def test_odd_osc_host_is_one_escaped_line(capsys):
    assert main(["live", "--input", "demo", "--output", "null", "--duration", "1", "--osc-host",
                 "127.0.0.1\x1b[2J", "--osc-port", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --osc-host 127.0.0.1\\x1b[2J") and "\x1b" not in err
