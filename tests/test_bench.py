"""`autoencoded bench`: a table on screen and a JSON file, every backend measured or skipped with a reason."""

from __future__ import annotations

import json

from autoencoded.cli import main
from autoencoded.live.engines import tensorrt_unavailable
from autoencoded.live.engines.ort_backend import cpu_threads, physical_cores


def test_bench_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--arch", "lite", "--size", "64x48", "--seconds", "0.1", "--max-batch", "4",
               "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "autoencoded bench" in printed and "fps @1" in printed and "onnxruntime" in printed
    doc = json.loads(out.read_text())
    assert doc["machine"]["cpu_count"] >= 1
    rows = {r["backend"]: r for r in doc["results"]}
    assert set(rows) == {"tensorrt", "onnxruntime", "torch"}
    # onnxruntime on the CPU at live's setting and with the whole CPU
    pools = [r["threads"] for r in doc["results"] if r["backend"] == "onnxruntime"]
    assert pools == list(dict.fromkeys([cpu_threads(), physical_cores()]))
    for name in ("onnxruntime", "torch"):
        r = rows[name]
        assert r["arch"] == "lite" and (r["width"], r["height"]) == (64, 48)
        assert 0 < r["batch1"]["p50_ms"] <= r["batch1"]["p99_ms"] and r["batch1"]["fps"] > 0
        assert r["best"]["best_batch"] in (1, 4) and r["best"]["fps"] > 0
        assert r["gflops"] > 0 and r["params_m"] > 0
    reason = tensorrt_unavailable()
    if reason:
        assert rows["tensorrt"]["skipped"] == f"the tensorrt backend cannot run: {reason}"
    else:
        assert rows["tensorrt"]["engine"].startswith("tensorrt")


def test_bench_bad_size(capsys):
    assert main(["bench", "--size", "big"]) == 2
    assert "expected WIDTHxHEIGHT" in capsys.readouterr().err


def test_bench_thread_counts_are_measured_one_by_one(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--arch", "lite", "--size", "64x48", "--backend", "onnxruntime", "--seconds", "0.05",
               "--max-batch", "1", "--threads", "1", "--threads", "3", "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["threads"] for r in rows] == [1, 3]
    assert "1 thread)" in rows[0]["engine"] and "3 threads)" in rows[1]["engine"]
    printed = capsys.readouterr().out
    assert "1 thread)" in printed and "3 threads)" in printed
