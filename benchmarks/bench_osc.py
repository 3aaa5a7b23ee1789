"""OSC robustness and cost, measured over real UDP sockets on loopback.

    .venv/bin/python benchmarks/bench_osc.py [--fuzz 100000] [--flood-rate 50000] [--seconds 8]

1. fuzz: N hostile datagrams (tests/test_osc.py's corpus), then how long until a valid message is applied,
   measured from just before sendto to the ParamStore's own timestamp of the write (store.changed_at).
2. apply latency of single valid messages on an idle server (p50 / p99 / max over 300 sends).
3. patterns: the cost of one datagram carrying an address pattern of each hostile shape (every one
   distinct, so none is answered from the pattern cache), handled by the server's own code; CPU time of
   the handling thread, so the figure holds on a busy machine.
4. flood: a real engine loop (lite model at 256x144, torch CPU: encode -> latent effects -> decode, reading
   a ParamStore snapshot every frame) runs unflooded, then while another process sends /noise messages at
   --flood-rate msg/s to the server; fps ratio, the server's counters and the process's peak RSS.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from autoencoded.live.control.latent import LatentFX  # noqa: E402
from autoencoded.live.control.osc import MAX_BUNDLE_ITEMS, OscServer  # noqa: E402
from autoencoded.live.control.params import ParamStore  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def msg(address: str, value: float) -> bytes:
    from pythonosc.osc_message_builder import OscMessageBuilder

    b = OscMessageBuilder(address)
    b.add_arg(value)
    return b.build().dgram


def apply_latency(store: ParamStore, port: int, value: float) -> float:
    """ms from just before sendto to the store's timestamp of the write."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t0 = time.perf_counter()
    s.sendto(msg("/noise", value), ("127.0.0.1", port))
    deadline = time.monotonic() + 30
    while abs(store.peek().noise - value) > 1e-6:
        if time.monotonic() > deadline:
            raise RuntimeError("valid message never applied")
        time.sleep(0.0001)
    s.close()
    return (store.changed_at("noise") - t0) * 1000.0


def bench_fuzz(n: int) -> dict:
    from test_osc import fuzz_corpus

    corpus, kinds = fuzz_corpus(n, seed=2)
    store = ParamStore()
    srv = OscServer(store, "127.0.0.1", 0).start()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    sent = 0
    for i in range(0, n, 1000):  # paced on the server's progress so the kernel never drops (exact counts)
        for d in corpus[i:i + 1000]:
            s.sendto(d, ("127.0.0.1", srv.port))
            sent += 1
        while srv.counters["processed"] < sent - 2000:
            time.sleep(0.0005)
    while srv.counters["processed"] < sent:
        time.sleep(0.0005)
    dt = time.perf_counter() - t0
    # right after the fuzz: a valid message, then 300 more on the now idle server
    first = apply_latency(store, srv.port, 0.731)
    lat = [apply_latency(store, srv.port, 0.1 + (i % 2) * 0.5 + i * 1e-4) for i in range(300)]
    alive = srv._thread is not None and srv._thread.is_alive()
    c = srv.stats()
    srv.stop()
    return {"n": n, "seconds": dt, "rate": n / dt, "first_ms": first, "lat": lat, "alive": alive,
            "counters": c, "kinds": kinds, "rss_growth_mb": rss_mb() - rss0}


PATTERN_SHAPES = {
    "`*` (the 44-byte freeze)": "/****************/****************x{i}",
    "`?`": "/*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?/?{i}",
    "`[...]`": "/[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*[!x]/*{i}",
    "`{a,b}`": "/{{n,c,s,f,m}}*/{{store,recall,max,drift,seed}}*{i}",
    "all at once": "/*/{{st,re}}*[a-z]?*/[0-9]{i}*",
    "a bundle of MAX_BUNDLE_ITEMS patterns": "bundle",
    "a bundle of MAX_BUNDLE_ITEMS plain messages (for scale)": "plain",
}


def bench_patterns(n: int = 300) -> dict[str, tuple[float, float]]:
    """shape -> (p50, max) microseconds of CPU to handle one datagram."""
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder


    store = ParamStore()
    srv = OscServer(store, "127.0.0.1", 0)
    srv.set_aliases({f"/{p}/fader{k}": "noise" for p in range(1, 5) for k in range(1, 9)})  # TouchOSC's size
    out = {}
    for shape, pattern in PATTERN_SHAPES.items():
        cpu = []
        for i in range(n):
            if pattern in ("bundle", "plain"):
                b = OscBundleBuilder(IMMEDIATELY)
                for k in range(MAX_BUNDLE_ITEMS):
                    m = OscMessageBuilder(f"/cue/store/{{{i},{k}}}*" if pattern == "bundle" else "/noise")
                    m.add_arg(1.0)
                    b.add_content(m.build())
                data = b.build().dgram
            else:
                data = msg(pattern.format(i=i), 1.0)
            t0 = time.thread_time()
            srv.handle_datagram(data, ("127.0.0.1", 9))
            cpu.append((time.thread_time() - t0) * 1e6)
        out[shape] = (statistics.median(cpu), max(cpu))
    srv.socket.close()
    return out


def flood_sender(target, rate: int, stop, ready, count) -> None:
    """Send /noise at `rate` msg/s to the port in target.value (0: pause) until stop is set."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    payloads = [msg("/noise", (i % 1000) / 1000) for i in range(1000)]
    ready.set()
    n = 0
    while not stop.is_set():
        port = target.value
        if port == 0:
            time.sleep(0.01)
            continue
        t0, sent = time.perf_counter(), 0
        while target.value == port and not stop.is_set():
            due = int((time.perf_counter() - t0) * rate)
            while sent < due:
                try:
                    s.sendto(payloads[n % 1000], ("127.0.0.1", port))
                except OSError:
                    pass
                sent += 1
                n += 1
            time.sleep(0.0005)
    count.value = n


def engine_loop(seconds: float, store: ParamStore, threads: int) -> float:
    import torch

    from autoencoded.training.model import AutoEncoder, ModelConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = ModelConfig.preset("lite")
    model = AutoEncoder(cfg).eval()
    fx = LatentFX(cfg.z_dim)
    x = torch.rand(1, 3, cfg.height, cfg.width) * 2 - 1
    frames = 0
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            p = store.snapshot()
            mu, ls = model.encoder(x)
            z = fx(mu.numpy(), ls.numpy(), p)
            model.decoder(torch.from_numpy(z))
            frames += 1
        return frames / (time.perf_counter() - t0)


def thread_cpu_s(native_id: int) -> float:
    """utime + stime of one thread of this process, in seconds (Linux)."""
    with open(f"/proc/self/task/{native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_flood(rate: int, seconds: float, threads: int, rounds: int = 4) -> dict:
    """Alternate short runs of the engine loop in three conditions, `rounds` times, and take medians:
    quiet (no sender), sender flooding a socket nobody reads (the flood's own CPU cost on this machine),
    sender flooding the OSC server (what the server adds)."""
    store = ParamStore(noise=0.5)
    srv = OscServer(store, "127.0.0.1", 0).start()
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    ctx = mp.get_context("spawn")
    target, stop, ready, count = ctx.Value("i", 0), ctx.Event(), ctx.Event(), ctx.Value("q", 0)
    proc = ctx.Process(target=flood_sender, args=(target, rate, stop, ready, count))
    proc.start()
    ready.wait(60)
    engine_loop(1.0, store, threads)  # warm-up
    fps: dict[str, list[float]] = {"quiet": [], "dead": [], "server": []}
    rss0, peak, server_cpu, flood_s = rss_mb(), 0.0, 0.0, 0.0
    c0 = srv.stats()
    for _ in range(rounds):
        for phase, port in (("quiet", 0), ("dead", dead.getsockname()[1]), ("server", srv.port)):
            target.value = port
            time.sleep(0.3)
            cpu0, t0 = thread_cpu_s(srv._thread.native_id), time.perf_counter()
            fps[phase].append(engine_loop(seconds / rounds, store, threads))
            if phase == "server":
                server_cpu += thread_cpu_s(srv._thread.native_id) - cpu0
                flood_s += time.perf_counter() - t0
                peak = max(peak, rss_mb())
    target.value = 0
    stop.set()
    proc.join()
    c1 = srv.stats()
    latency_after = apply_latency(store, srv.port, 0.4242)
    srv.stop()
    dead.close()
    med = {k: statistics.median(v) for k, v in fps.items()}
    return {"rate": rate, "fps": fps, "med": med, "sent": count.value,
            "received": c1["received"] - c0["received"], "coalesced": c1["coalesced"] - c0["coalesced"],
            "applied": c1["applied"] - c0["applied"], "server_cpu": server_cpu / max(flood_s, 1e-9),
            "received_rate": (c1["received"] - c0["received"]) / max(flood_s, 1e-9),
            "rss0": rss0, "peak": max(peak, rss_mb()), "latency_after_ms": latency_after, "threads": threads}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fuzz", type=int, default=100_000)
    ap.add_argument("--flood-rate", type=int, default=50_000)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--engine-threads", type=int, default=1)
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}\n")

    f = bench_fuzz(a.fuzz)
    c = f["counters"]
    lat = sorted(f["lat"])
    print("| fuzz | value |\n|---|---|")
    print(f"| datagrams | {f['n']:,} ({', '.join(f'{k} {v}' for k, v in f['kinds'].items())}) |")
    print(f"| handled in | {f['seconds']:.1f} s ({f['rate']:,.0f} datagrams/s) |")
    print(f"| server alive after | {f['alive']} |")
    print(f"| counters | {', '.join(f'{k} {v:,}' for k, v in c.items())} |")
    print(f"| first valid message after the fuzz applied in | {f['first_ms']:.2f} ms |")
    print(f"| apply latency, idle (300 sends) | p50 {statistics.median(lat):.3f} ms, "
          f"p99 {lat[int(len(lat) * 0.99) - 1]:.3f} ms, max {lat[-1]:.3f} ms |")
    print(f"| RSS growth over the fuzz | {f['rss_growth_mb']:.1f} MB |\n")

    print("| address pattern shape (each datagram distinct) | CPU per datagram p50 / max |\n|---|---|")
    for shape, (p50, mx) in bench_patterns().items():
        print(f"| {shape.replace('MAX_BUNDLE_ITEMS', str(MAX_BUNDLE_ITEMS))} | {p50:.0f} / {mx:.0f} us |")
    print()

    fl = bench_flood(a.flood_rate, a.seconds, a.engine_threads)
    m = fl["med"]
    runs = {k: " ".join(f"{x:.1f}" for x in v) for k, v in fl["fps"].items()}
    print(f"| flood: {fl['rate']:,} msg/s of /noise from another process | median fps (runs) |\n|---|---|")
    print(f"| engine loop, quiet (lite 256x144, torch CPU, {fl['threads']} thread) | {m['quiet']:.1f} ({runs['quiet']}) |")
    print(f"| sender flooding a socket nobody reads (the flood's own CPU cost) | {m['dead']:.1f} "
          f"({runs['dead']}): {m['dead'] / m['quiet'] * 100:.1f} % of quiet |")
    print(f"| sender flooding the OSC server | {m['server']:.1f} ({runs['server']}): "
          f"{m['server'] / m['quiet'] * 100:.1f} % of quiet, {m['server'] / m['dead'] * 100:.1f} % of the "
          "dead-socket flood |")
    print(f"| OSC server thread CPU while flooded | {fl['server_cpu'] * 100:.1f} % of one core, "
          f"{fl['received_rate']:,.0f} msg/s received |")
    print(f"| coalesced (latest value wins) / applied | {fl['coalesced']:,} / {fl['applied']:,} |")
    print(f"| RSS before / peak while flooded | {fl['rss0']:.0f} MB / {fl['peak']:.0f} MB |")
    print(f"| valid message after the flood applied in | {fl['latency_after_ms']:.2f} ms |")


if __name__ == "__main__":
    main()
