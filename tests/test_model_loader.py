"""The hot-swap loader on real threads: two requests together on a fresh loader are one load at a time."""

from __future__ import annotations

import sys
import threading

from autoencoded.live.loop.loader import ModelLoader


def test_two_requests_together_on_a_fresh_loader_are_not_a_hung_load():
    """Issue 23 item 12: two /model requests together on a fresh instance said "the load begun 3568 s ago is
    hung" (the machine's uptime: the loader's start time was 0.0 until its thread took the first request)
    and started a second load beside the first."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1.0)  # the second request comes before the new thread has run, as it did over OSC
    try:
        for _ in range(20):  # the thread may run first on an idle machine: 48 of 50 rounds showed it before
            release = threading.Event()
            opened, lines, delivered = [], [], []

            def open_engine(spec, release=release, opened=opened):
                opened.append(spec)
                release.wait(30)
                return spec

            loader = ModelLoader(open_engine, lambda engine, fut, d=delivered: (d.append(engine), fut.set_result(engine)),
                                 lambda spec, exc, lines=lines: lines.append(f"failed {spec}: {exc}"), lines.append)
            first = loader.request("a")
            second = loader.request("b")
            release.set()
            assert second.result(timeout=30) == "b"
            assert first.cancelled()  # overtaken while it waited
            assert not any("hung" in line for line in lines), lines
            assert delivered == ["b"] and loader.loads == len(opened) == 1 + (opened[0] == "a")
            assert loader.close(timeout=30)
    finally:
        sys.setswitchinterval(interval)
