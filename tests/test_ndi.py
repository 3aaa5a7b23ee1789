"""NDI for real, over loopback: each scenario of ndi_loopback.py runs in a network namespace that holds only
`lo` (`unshare -n`, as root), with NDI pointed at 127.0.0.1 by an ndi-config.v1.json written the way
--ndi-localhost writes it. Plus the paths that need no network: the config file and the missing extra."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autoencoded.errors import UserError
from autoencoded.live.io import ndi
from autoencoded.live.io.sinks import open_sink
from autoencoded.live.io.sources import open_source

HERE = Path(__file__).resolve().parent


def _namespace_problem() -> str | None:
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare (util-linux) and ip (iproute2)"
    try:
        r = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up && ip addr show lo"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unshare -n failed ({exc})"
    if r.returncode != 0 or "127.0.0.1" not in r.stdout:
        return f"cannot make a network namespace here (needs root): {r.stderr.strip()[:200]}"
    return None


NS_PROBLEM = _namespace_problem()
needs_ns = pytest.mark.skipif(NS_PROBLEM is not None, reason=str(NS_PROBLEM))


@pytest.fixture(scope="module")
def ndi_config(tmp_path_factory):
    pytest.importorskip("cyndilib", reason="the ndi extra is not installed (pip install 'autoencoded[ndi]')")
    folder = tmp_path_factory.mktemp("ndi-config")
    old = os.environ.get("NDI_CONFIG_DIR")
    ndi.write_localhost_config(folder)
    if old is None:
        os.environ.pop("NDI_CONFIG_DIR")
    else:
        os.environ["NDI_CONFIG_DIR"] = old
    return folder


def in_namespace(config: Path, *args: str, timeout: float = 240) -> dict:
    """Run `python tests/ndi_loopback.py ARGS` in a fresh namespace with only lo; its JSON findings."""
    script = f"ip link set lo up && exec {sys.executable} {HERE / 'ndi_loopback.py'} " + " ".join(args)
    env = dict(os.environ, NDI_CONFIG_DIR=str(config), PYTHONPATH=str(HERE))
    r = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=timeout,
                       env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@needs_ns
def test_ndi_frames_arrive_within_8_grey_levels(ndi_config):
    r = in_namespace(ndi_config, "pixels")
    assert r["shape"] == [180, 320, 3] and r["dtype"] == "uint8"
    assert r["p99_diff"] <= 8 and r["mean_diff"] <= 4, r  # NDI's codec is lossy, but not by much


@needs_ns
def test_ndi_input_holds_the_last_frame_through_a_stall_and_reconnects(ndi_config):
    r = in_namespace(ndi_config, "stall")
    assert r["before_in"] >= 10, r
    assert r["held_during"] > 0 and r["out_during"] > 20, r  # the output kept going on the held frame
    assert r["outages"] == 1 and r["recoveries"] == 1 and r["in_after"] > 5, r
    assert any("recovered" in line for line in r["logs"]), r["logs"]


@needs_ns
def test_live_demo_to_ndi_is_received_by_another_process(ndi_config):
    """The NDI example of docs/performing.md: `autoencoded live --input demo --output ndi:autoencoded` seen and received."""
    r = in_namespace(ndi_config, "live_cli", "8", "--input", "demo", "--output", "ndi:autoencoded",
                     "--size", "640x360")
    assert r["rc"] == 0, r["stderr"]
    assert r["received"] >= 10 and r["sizes"] == [[360, 640, 3]], r
    assert 20 < r["mean_level"] < 235 and r["max_change"] > 0.5, r  # a moving picture, not black or frozen
    assert "NDI: sending 'autoencoded'" in r["stderr"]


@needs_ns
def test_probe_reads_its_codes_back_over_ndi(ndi_config, tmp_path):
    stats = tmp_path / "stats.json"
    r = in_namespace(ndi_config, "live_cli_probe", "120", str(stats), timeout=300)
    assert r["rc"] == 0, r["stderr"]
    probe = {p["where"]: p for p in json.loads(stats.read_text())["probe"]}
    back = probe["ndi autoencoded (received back)"]
    handed = probe["ndi autoencoded (handed over)"]
    assert handed["frames"] > 30 and back["frames"] > 20, probe
    # NDI adds its own transport on top of the hand-over, never takes any away
    assert 0 < handed["p50_ms"] < back["p50_ms"], probe


@needs_ns
def test_names_seen_on_the_network_are_printed_escaped(ndi_config):
    """Issue 23 item 6: a source named evil<ESC>[31m...<ESC>]0;pwned<BEL> reached the terminal raw inside the
    "no NDI source named ..." line (a colour change and a window title set by another app's name)."""
    r = in_namespace(ndi_config, "escaped_names")
    error = r["error"]
    assert error and error.startswith("no NDI source named 'nobody' (seen: "), r
    assert "\x1b" not in error and "\x07" not in error, error
    assert "evil\\x1b[31mred\\x1b]0;pwned\\x07" in error, error


def test_localhost_config_is_written_and_merged(tmp_path, monkeypatch):
    monkeypatch.setenv("NDI_CONFIG_DIR", str(tmp_path / "cfg"))
    path = ndi.write_localhost_config()
    assert path == tmp_path / "cfg" / "ndi-config.v1.json"
    assert json.loads(path.read_text()) == {"ndi": {"networks": {"ips": "127.0.0.1"}}}
    # another app's settings survive
    path.write_text(json.dumps({"ndi": {"machinename": "stage", "networks": {"discovery": "x"}}}))
    ndi.write_localhost_config()
    assert json.loads(path.read_text()) == {"ndi": {"machinename": "stage",
                                                    "networks": {"discovery": "x", "ips": "127.0.0.1"}}}
    path.write_text("{not json")
    with pytest.raises(UserError, match="cannot read the NDI config"):
        ndi.write_localhost_config()
    assert path.read_text() == "{not json"  # nothing lost


def test_localhost_config_defaults_to_a_folder_of_ours(tmp_path, monkeypatch):
    monkeypatch.delenv("NDI_CONFIG_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    path = ndi.write_localhost_config()
    assert path == tmp_path / ".config" / "autoencoded" / "ndi" / "ndi-config.v1.json"
    assert os.environ["NDI_CONFIG_DIR"] == str(path.parent)


def test_without_the_extra_one_line_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cyndilib", None)  # what `import cyndilib` sees when absent
    with pytest.raises(UserError, match=r"^NDI needs cyndilib: pip install 'autoencoded\[ndi\]'$"):
        open_sink("ndi").open(64, 48, 30)
    with pytest.raises(UserError, match=r"pip install 'autoencoded\[ndi\]'"):
        open_source("ndi:Resolume")


def test_ndi_specs():
    assert open_sink("ndi").ndi_name == "autoencoded"
    assert open_sink("ndi:stage left").ndi_name == "stage left"
    with pytest.raises(UserError, match="NDI source's name"):
        open_source("ndi:")


def test_ndi_sink_opens_sends_and_closes_without_receivers():
    pytest.importorskip("cyndilib")
    logs = []
    sink = ndi.NdiSink("unit", log=logs.append)
    sink.open(64, 48, 25)
    try:
        for i in range(3):
            sink.write(np.full((48, 64, 3), i * 40, np.uint8))
        assert sink.connections() == 0
    finally:
        sink.close()
        sink.close()  # twice is fine
    assert logs == ["NDI: sending 'unit' (64x48 @ 25 fps)"] and sink.connections() == 0


def test_an_ndi_name_past_ndis_limit_is_refused_before_the_runtime_sees_it():
    """Before: --output ndi:NAME of ~250 characters died with SIGSEGV inside the NDI runtime. NDI documents 253
    characters for the full name 'HOST (NAME)'; the longest name that fits opens a real sender."""
    import socket

    pytest.importorskip("cyndilib")
    room = ndi.MAX_SOURCE_NAME - len(f"{socket.gethostname()} ()".encode())
    with pytest.raises(UserError) as err:
        open_sink("ndi:" + "a" * (room + 1))
    assert f"at most {room} bytes" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="no NDI source can have this name"):
        open_source("ndi:" + "é" * 200)
    # the longest that fits: a real sender in a process of its own (a crash would be that process's)
    probe = ("import sys\nfrom autoencoded.live.io.sinks import open_sink\n"
             "s = open_sink('ndi:' + 'a' * int(sys.argv[1]), log=lambda m: None)\ns.open(64, 48, 30)\ns.close()\n")
    r = subprocess.run([sys.executable, "-c", probe, str(room)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
