"""What tests share: synthetic videos, audio and datasets, tiny real models, ffprobe's view of a file, OSC
datagrams and senders, MIDI messages, a pseudo-terminal. Tests import from here (fixtures come from
conftest), never from each other."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from pythonosc.osc_message_builder import OscMessageBuilder

from autoencoded.cli import main

# ------------------------------------------------------------------------------------------ video files

def headless_env() -> dict:
    """The environment for a live command run as a test: no display (no window output), unbuffered lines."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# a plugin sink that counts the frames it gets into the file its ARG names (the drill's, the isolation tests')
COUNTING_SINK = '''
"""A sink that counts the frames it gets and writes the count to the file named by its ARG when closed."""
from pathlib import Path

from autoencoded.live.io.sinks import Sink, register_sink


class CountingSink(Sink):
    name = "counter"

    def __init__(self, path):
        self.path, self.frames = Path(path), 0

    def write(self, frame):
        self.frames += 1

    def close(self):
        self.path.write_text(str(self.frames))


register_sink("counter", lambda options: CountingSink(options.arg), "counts frames into the file ARG names",
              arg="FILE")
'''


def plugin_env(folder: Path, name: str, source: str) -> dict:
    """The environment of a command that loads the plugin module `name` (autoencoded.plugins), its `source`
    written into `folder`."""
    (Path(folder) / f"{name}.py").write_text(source)
    env = headless_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH")) if p)
    env["AUTOENCODED_PLUGINS"] = name
    return env


def synthetic_frame(i: int, width: int, height: int) -> np.ndarray:
    """A BGR frame that changes every index: a moving gradient with a bright square (never static)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    b = (xx / max(width - 1, 1) * 255 + i * 7) % 256
    g = (yy / max(height - 1, 1) * 255 + i * 3) % 256
    r = ((xx + yy) / max(width + height - 2, 1) * 255 + i * 11) % 256
    img = np.stack([b, g, r], axis=-1).astype(np.uint8)
    s = max(4, min(width, height) // 6)
    x0 = (i * 5) % max(1, width - s)
    y0 = (i * 3) % max(1, height - s)
    img[y0:y0 + s, x0:x0 + s] = 255
    return img


def write_video(path: Path, n_frames: int = 24, width: int = 320, height: int = 180, fps: float = 24.0,
                fourcc: str = "mp4v", frame_fn=synthetic_frame) -> Path:
    """Write a real video file with OpenCV and return its path."""
    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {fourcc} to {path}")
    for i in range(n_frames):
        writer.write(frame_fn(i, width, height))
    writer.release()
    return path


def read_video(path, limit: int | None = None) -> list[np.ndarray]:
    """Every frame of a video file (or the first `limit`), decoded by OpenCV, as RGB uint8 arrays."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while limit is None or len(frames) < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def streams(path) -> dict[str, dict]:
    """ffprobe's view of a file, counting the frames it decodes: {"video": {...}, "audio": {...}}."""
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                          "stream=codec_type,codec_name,width,height,r_frame_rate,nb_read_frames,duration",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}


# ------------------------------------------------------------------------------------------------ audio

def kick_track(seconds: float = 6.0, rate: int = 44100, bpm: float = 120.0, first: float = 0.25,
               noise: float = 0.02, hats: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic dance-floor loop: kick drums at `bpm` from `first` s (a 150->50 Hz sweep decaying in
    ~120 ms), quieter hi-hats on the off-beats and a noise floor. -> (mono float32 samples, kick times s)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    x = rng.normal(0.0, noise, n).astype(np.float32)
    t = np.arange(int(0.4 * rate)) / rate
    sweep = 50.0 + 100.0 * np.exp(-t / 0.03)
    kick = (np.sin(2 * np.pi * np.cumsum(sweep) / rate) * np.exp(-t / 0.12)).astype(np.float32)
    kicks = np.arange(first, seconds - 0.4, 60.0 / bpm)
    for k in kicks:
        i = int(round(k * rate))
        x[i:i + kick.size] += 0.8 * kick
    if hats:
        m = int(0.03 * rate)
        hat = (rng.normal(0.0, 1.0, m) * np.exp(-np.arange(m) / rate / 0.008)).astype(np.float32)
        for k in kicks + 30.0 / bpm:
            i = int(round(k * rate))
            if i + m < n:
                x[i:i + m] += 0.15 * hat
    return np.clip(x, -1.0, 1.0), kicks


ALSA_FILE_DEVICE = """
pcm.{name} {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{raw}"
    format "raw"
    hint {{ show on description "a file played as a capture device" }}
}}
"""


def alsa_file_device(home: Path, samples: np.ndarray, name: str = "kicks") -> Path:
    """A real capture device without a sound card: ALSA's file plugin plays `samples` (float32, any rate) to
    whoever records from PCM `name`, for processes whose HOME is `home` (it reads home/.asoundrc). The device
    is not clocked: it delivers as fast as it is read."""
    raw = Path(home) / f"{name}.f32"
    np.asarray(samples, "<f4").tofile(raw)
    (Path(home) / ".asoundrc").write_text(ALSA_FILE_DEVICE.format(name=name, raw=raw))
    return raw


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """16-bit mono PCM WAV (stdlib wave)."""
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return Path(path)


# ------------------------------------------------------------------------------------ models and runs

# a lite network small enough to train a few steps in seconds on the 2-core CPU
# (the FC code beside the 128x72-style layout: the machinery the training tests exercise; TINY_SPATIAL is
# lite's own spatial code at the same widths)
TINY = {"enc_channels": [8, 16, 16, 32], "disc_channels": [8, 16, 16, 32], "bottleneck_channels": 8, "z_dim": 16,
        "latent_channels": 0, "layout": True, "layout_scale": 8, "noise_scale": 1.0}
TINY_SPATIAL = {"enc_channels": [8, 16, 16, 32], "disc_channels": [8, 16, 16, 32], "dec_channels": [32, 16, 16, 8],
                "latent_channels": 2}


def tiny_checkpoint(path: Path, width: int = 64, height: int = 48, seed: int = 0, he_init: bool = False) -> Path:
    """A randomly initialised lite model at width x height, saved as a real checkpoint.

    he_init: He initialisation keeps the signal's variance through the layers, so the untrained decoder
    answers its latent the way a trained one does (torch's default init shrinks it ~30x and hides every
    latent effect)."""
    from autoencoded.training.model import AutoEncoder, ModelConfig
    from autoencoded.training.weights import save_weights

    torch.manual_seed(seed)
    cfg = ModelConfig.preset("lite", width=width, height=height)
    model = AutoEncoder(cfg)
    if he_init:
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
    save_weights(path, cfg, model.eval().state_dict())
    return path


def make_dataset(path: Path, n: int = 24, width: int = 64, height: int = 48, complete: bool = True) -> Path:
    """A real dataset folder (frames.npy + dataset.json) of moving gradients with a bright square."""
    path.mkdir(parents=True, exist_ok=True)
    frames = np.lib.format.open_memmap(path / "frames.npy", mode="w+", dtype=np.uint8, shape=(n, height, width, 3))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        frames[i, ..., 0] = (xx / width * 255 + i * 9) % 256
        frames[i, ..., 1] = (yy / height * 255 + i * 5) % 256
        frames[i, ..., 2] = ((xx + yy) * 2 + i * 13) % 256
        s = max(4, height // 5)
        x0, y0 = (i * 5) % (width - s), (i * 3) % (height - s)
        frames[i, y0:y0 + s, x0:x0 + s] = 255
    frames.flush()
    del frames
    meta = {"format": "autoencoded-dataset", "version": 1, "complete": complete, "frames": n, "width": width,
            "height": height, "sources": [{"path": "synthetic", "stopped_at": None if complete else n}]}
    (path / "dataset.json").write_text(json.dumps(meta))
    return path


def metrics(run: Path) -> dict[int, dict]:
    """A run's metrics.jsonl as {step: record} of the steps' losses (not the evaluations' records)."""
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "step" in rec and "eval" not in rec:
            out[rec["step"]] = rec
    return out


def cli(*args) -> int:
    """The real command line, in process: `autoencoded ARGS...` -> its exit code."""
    return main([str(a) for a in args])


# ------------------------------------------------------------------------------------------------ OSC

def msg(address: str, *args, tags: str | None = None) -> bytes:
    b = OscMessageBuilder(address)
    for i, a in enumerate(args):
        b.add_arg(a, tags[i] if tags else None)
    return b.build().dgram


def osc_string(s: bytes) -> bytes:
    s += b"\x00"
    return s + b"\x00" * (-len(s) % 4)


def bundle(*elements: bytes, timetag: float | None = None) -> bytes:
    """A bundle of raw elements; timetag in seconds since 1970 (None: immediately)."""
    if timetag is None:
        tt = struct.pack(">Q", 1)
    else:
        secs = timetag + 2208988800  # NTP epoch
        tt = struct.pack(">II", int(secs), int((secs % 1) * 2**32))
    return b"#bundle\x00" + tt + b"".join(struct.pack(">i", len(e)) + e for e in elements)


def sender(bind: str = "127.0.0.1") -> socket.socket:
    """A real UDP socket to send datagrams from (IPv6 when `bind` is an IPv6 address)."""
    s = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((bind, 0))
    return s


def wait_for(cond, what: str, timeout: float = 30.0, poll_s: float = 0.002) -> None:
    """Poll until cond() is true, every `poll_s` (longer where cond() itself costs, like a page round trip).
    The timeout only guards against a hang; it is not a latency check."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll_s)


def settle(server, received: int, timeout: float = 30.0) -> None:
    """Wait until the server has received and finished handling `received` datagrams in total."""
    wait_for(lambda: server.counters["processed"] >= received, f"{received} datagrams handled", timeout)


def non_loopback_ipv4() -> str | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # UDP connect sends nothing; it only picks the source address
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") else ip


# ----------------------------------------------------------------------------------------------- MIDI

def cc(control: int, value: int, channel: int = 0):
    """A real mido control-change message."""
    import mido

    return mido.Message("control_change", channel=channel, control=control, value=value)


def has_midi_subsystem() -> bool:
    import mido

    from autoencoded.stderr import silenced

    try:
        with silenced():
            mido.get_input_names()
        return True
    except OSError:
        return False


class FakeDevices:
    """The hardware boundary (no MIDI subsystem here): which ports exist, and a port that delivers messages
    through its callback."""

    class Port:
        def __init__(self, name, callback):
            self.name, self.callback, self.closed = name, callback, False

        def close(self):
            self.closed = True

    def __init__(self, names):
        self.names = list(names)
        self.ports = []
        self.fail_open = False

    def get_input_names(self):
        return list(self.names)

    def open_input(self, name, callback=None):
        if self.fail_open:
            raise OSError("device busy")
        port = self.Port(name, callback)
        self.ports.append(port)
        return port


# ---------------------------------------------------------------------------------------- terminals

class Terminal:
    """A command running in a pseudo-terminal as its controlling terminal, in its own session and process
    group, as a shell runs a foreground job: `ctrl_c()` types Ctrl-C, and the terminal driver (not this
    test) sends SIGINT to the whole foreground process group, children included."""

    def __init__(self, cmd: list[str], cwd=None, env=None) -> None:
        self.master, slave = os.openpty()

        def controlling_tty() -> None:  # after setsid (start_new_session), in the child
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            # an interactive shell gives its foreground job default signals, even where this test runs
            # in a background job (which ignores SIGINT and SIGQUIT)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGQUIT, signal.SIG_DFL)

        self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                                     start_new_session=True, preexec_fn=controlling_tty)
        os.close(slave)
        self._out = bytearray()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO once the last process holding the terminal exits
                return
            if not data:
                return
            self._out.extend(data)

    @property
    def output(self) -> str:
        return self._out.decode(errors="replace")

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def wait(self, timeout: float = 60.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        finally:
            self._reader.join(2.0)
            os.close(self.master)
        return rc


# ------------------------------------------------------------------------------------- doctored models

def doctored_pack(src: Path, out: Path, kind: str, size: int = 1000) -> Path:
    """A copy of the model pack `src` whose decoder is real ONNX that misbehaves inside onnxruntime:
    kind "hang": every inference spins in a Loop of 2**62 steps (it never ends by itself);
    kind "slow": opening it takes a while, constant-folding two size x size matrix products.
    The picture is otherwise the model's own (the extra result is added times zero)."""
    import shutil

    import onnx
    from onnx import TensorProto, helper

    from autoencoded.live.engines.pack import META_FILE, hash_files

    shutil.copytree(src, out)
    meta = json.loads((out / META_FILE).read_text())
    path = out / meta["files"]["decoder"]
    model = onnx.load(str(path))
    g = model.graph
    for node in g.node:  # the node that made "image" now makes "image_raw"
        node.output[:] = ["image_raw" if o == "image" else o for o in node.output]
    if kind == "hang":
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Add", ["x_in", "one"], ["x_out"])], "spin",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
             helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1])],
            [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
        g.initializer.extend([helper.make_tensor("trips", TensorProto.INT64, [], [2**62]),
                              helper.make_tensor("go", TensorProto.BOOL, [], [True]),
                              helper.make_tensor("to1", TensorProto.INT64, [1], [1])])
        # the loop starts from the latent, so onnxruntime cannot fold it away when it opens the model
        g.node.extend([helper.make_node("ReduceSum", ["z"], ["zsum"], keepdims=0),
                       helper.make_node("Reshape", ["zsum", "to1"], ["zsum1"]),
                       helper.make_node("Loop", ["trips", "go", "zsum1"], ["extra"], body=body)])
    elif kind == "slow":
        g.initializer.append(helper.make_tensor("square", TensorProto.INT64, [2], [size, size]))
        g.node.extend([helper.make_node("ConstantOfShape", ["square"], ["big"],
                                        value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])),
                       helper.make_node("MatMul", ["big", "big"], ["big2"]),
                       helper.make_node("MatMul", ["big2", "big"], ["big3"]),
                       helper.make_node("ReduceSum", ["big3"], ["extra"], keepdims=0)])
    else:
        raise ValueError(kind)
    g.initializer.append(helper.make_tensor("nothing", TensorProto.FLOAT, [], [0.0]))
    g.node.extend([helper.make_node("Mul", ["extra", "nothing"], ["extra0"]),
                   helper.make_node("Add", ["image_raw", "extra0"], ["image"])])
    onnx.save(model, str(path))
    meta["model_hash"] = hash_files(out, meta["files"])
    (out / META_FILE).write_text(json.dumps(meta))
    return out
