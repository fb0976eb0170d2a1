"""The bench JSON validates against its schema and its figures are consistent."""

from __future__ import annotations

import copy
import json
import sys

import jsonschema
import numpy as np
from conftest import ROOT, run_cli

from train.export import export
from train.nets import build
from train.trim import importance, plan, remove_units


def test_bench_json_schema_and_consistency(tmp_path):
    import torch

    torch.manual_seed(0)  # an untrained net: threshold 0 so that its peaks are events (latency figures)
    net = build("onset", width=0.25).eval()
    export("onset", net, tmp_path / "onset-dense.ts", {"mode": "dense", "round": 0, "fraction_removed": 0.0,
                                                         "scores": {"test": {"f": 0.8}}}, decoder={"threshold": 0.0})
    small = copy.deepcopy(net)
    for g, idx in plan(small, importance(small, "magnitude"), 0.6, "global").items():
        remove_units(small, g, idx)
    export("onset", small, tmp_path / "onset-trim.ts", {"mode": "trim", "round": 1, "fraction_removed": 0.6,
                                                         "scores": {"test": {"f": 0.79}}}, decoder={"threshold": 0.0})
    out = tmp_path / "bench.json"
    r = run_cli([sys.executable, "-m", "edgemir", "bench", str(tmp_path), "--seconds", "2", "--json", str(out),
                 "--plot", str(tmp_path / "b.png")], timeout=900, env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr.decode()
    # on a 200-column terminal the tables still fit 80 columns (every column is behind --wide)
    lines = r.stdout.decode().splitlines()
    assert lines and max(len(x) for x in lines) <= 80, max(lines, key=len)
    rep = json.loads(out.read_text())
    jsonschema.validate(rep, json.loads((ROOT / "docs" / "bench-schema.json").read_text()))
    rows = {b["mode"]: b for b in rep["bundles"]}
    for b in rep["bundles"]:
        h = b["hop_ms"]
        assert 0 < h["p50"] <= h["p95"] <= h["p99"] <= h["max"]
    assert rows["trim"]["flops_per_second"] < rows["dense"]["flops_per_second"]
    assert rows["trim"]["params"] < rows["dense"]["params"] and rows["trim"]["bytes"] < rows["dense"]["bytes"]
    assert rows["dense"]["speedup_vs_dense"] == 1.0
    assert rep["engine"]["dropped_hops"] == 0 and rep["engine"]["latency_ms"]["p50"] > 0
    assert (tmp_path / "b.png").stat().st_size > 1000


def test_soak_growth_follows_the_rss_floor_not_the_allocator_swing():
    """Peaks of up to +25 MB that die out after a minute (a trend through every sample reads a fall)
    read flat; the same over a 0.1 MB/s leak reads that leak."""
    from edgemir.soak import floor_slope

    t = np.arange(0, 150, 0.2)
    swing = 25 * np.random.default_rng(0).random(len(t)) ** 4 * (t < 60)
    assert abs(floor_slope(np.c_[t, 300 + swing])) < 0.02
    assert abs(floor_slope(np.c_[t, 300 + swing + 0.1 * t]) - 0.1) < 0.02


def test_soak_reports_wall_time_rtf_and_a_flat_rss(tiny_bundles, tmp_path):
    """A short soak through analyze (the hour-long one is a benchmark, not a test): the figures are
    there and consistent, and the least-squares RSS trend is small."""
    out = tmp_path / "soak.json"
    r = run_cli([sys.executable, "-m", "edgemir", "bench", str(tiny_bundles), "--tasks", "onset,chord", "--soak", "2.5",
                 "--json", str(out)], timeout=600)
    assert r.returncode == 0, r.stderr.decode()
    s = json.loads(out.read_text())["soak"]
    assert abs(s["minutes"] - 2.5) < 0.01 and s["wall_s"] > 0 and abs(s["rtf"] - s["wall_s"] / 150) < 1e-6
    assert s["rss_min_after_warmup_mb"] <= s["rss_peak_mb"] and s["rss_growth_mb"] < 20
    assert s["events"] > 0 and b"budget" in r.stdout
