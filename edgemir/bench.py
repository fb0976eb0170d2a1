"""``edgemir bench``: per-bundle cost and latency, the whole engine paced in real time, and peers.

Every figure is measured in this run (warm, repeated, percentiles), except the accuracy figures
and FLOPs, which come from each bundle's card (measured by the training code that wrote it).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from edgemir.errors import UserError
from edgemir.labels import HOP, SAMPLE_RATE, TASKS
from edgemir.tasks import HEADLINE

SCHEMA_VERSION = 1


def machine() -> dict:
    model = platform.processor() or ""
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            fields.setdefault(k.strip().lower(), v.strip())
        model = fields.get("model name") or fields.get("model") or fields.get("hardware") or model
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "arch": platform.machine(), "system": platform.system(),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def _bench_bundle(path: str, threads: int, hops: int, q) -> None:
    """In a fresh process: load time, per-hop cost percentiles (the engine's path), peak RSS."""
    try:
        torch.set_num_threads(threads)
        from edgemir.bundle import load_bundle

        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        b = load_bundle(Path(path))
        load_ms = (time.perf_counter() - t0) * 1000
        card = b.card
        # what `run` does per 10-ms hop for this task: the frozen module's incremental step on one new
        # spectrum of real audio (the demo clip, looped), then the decoder
        from edgemir.audio_io import DEMO, read_audio
        from edgemir.engine import TaskRunner
        from edgemir.frontend import batch_spectrum

        runner = TaskRunner(card["task"], b.module, card, block=1)
        spec = batch_spectrum(torch.from_numpy(read_audio(DEMO)), runner.framing)
        levels = np.zeros(1)
        for i in range(50):
            runner.push(spec[i:i + 1], levels)
        ts = np.empty(hops)
        for i in range(hops):
            k = (50 + i) % len(spec)
            t = time.perf_counter()
            runner.push(spec[k:k + 1], levels)
            ts[i] = (time.perf_counter() - t) * 1000
        scores = card.get("scores", {}).get("test", {})
        q.put({"bundle": Path(path).name, "path": str(path), "task": card["task"], "mode": card.get("mode", "?"),
               "round": card.get("round"), "fraction_removed": card.get("fraction_removed"),
               "params": card["params"], "nonzero_params": card.get("nonzero_params", card["params"]),
               "bytes": os.path.getsize(path), "flops_per_second": card.get("flops_per_second"),
               "load_ms": load_ms, "hop_ms": {"p50": float(np.percentile(ts, 50)), "p95": float(np.percentile(ts, 95)),
                                              "p99": float(np.percentile(ts, 99)), "max": float(ts.max())},
               "rtf": float(np.percentile(ts, 50)) / 10.0,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024,
               "score": scores.get(HEADLINE[card["task"]]), "score_name": HEADLINE[card["task"]], "ours": True})
    except UserError as e:
        q.put({"error": str(e)})


def bench_bundle(path: Path, threads: int = 1, hops: int = 1000) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_bench_bundle, args=(str(path), threads, hops, q))
    p.start()
    res = q.get(timeout=600)
    p.join()
    if "error" in res:
        raise UserError(res["error"])
    return res


def bench_engine(bundles: dict, seconds: float, audio: np.ndarray | None = None) -> dict:
    """All selected tasks together, paced in real time from a file source."""
    from edgemir.app import WARMUP_S, Pipeline, build_engine
    from edgemir.sources import FileSource

    eng = build_engine(bundles)
    if audio is None:
        rng = np.random.default_rng(0)
        t = np.arange(int(4 * SAMPLE_RATE)) / SAMPLE_RATE
        audio = (0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sign(np.sin(2 * np.pi * 2 * t))) / 2
                 + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    src = FileSource.from_array(audio, "bench", realtime=True, loop=True)
    runner = Pipeline(src, eng, [])
    src.start()
    while runner.state.audio_s < WARMUP_S:  # warm-up: kept out of the figures, as on the live display
        runner.step(max_samples=SAMPLE_RATE)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while runner.state.audio_s < WARMUP_S + seconds:
        runner.step(max_samples=SAMPLE_RATE)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    st = runner.status()
    n = runner.samples
    right = next(iter(eng.stfts)).right  # the hops count the latest-completing framing's frames
    expected = max(0, (n - right) // HOP + 1)  # its frames complete after n samples
    return {"tasks": list(bundles), "seconds": runner.state.audio_s - WARMUP_S, "cpu_percent_one_core": cpu / wall * 100,
            "latency_ms": {"p50": st["latency_p50_ms"], "p99": st["latency_p99_ms"]},
            "block_compute_ms": {"p50": st["compute_p50_ms"], "p99": st["compute_p99_ms"]},
            "dropped_hops": max(0, expected - eng.stats.hops), "xruns": src.xruns, "algorithmic_latency_ms":
                {k: v * 1000 for k, v in eng.algorithmic_latency_s.items()}}


def bench_peers(seconds: float = 10.0) -> list[dict]:
    """Cost per second of audio of what users would pick instead, when installed."""
    rng = np.random.default_rng(0)
    x = (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE)
         + 0.01 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
    out = []

    def timed(name, task, fn, note):
        try:
            fn()  # warm-up (and numba compilation for librosa)
            t = time.perf_counter()
            fn()
            dt = time.perf_counter() - t
            out.append({"peer": name, "task": task, "ms_per_second_audio": dt / seconds * 1000, "note": note, "ours": False})
        except Exception as e:  # a peer that fails is reported, never fatal
            out.append({"peer": name, "task": task, "error": str(e).splitlines()[0][:120], "ours": False})

    try:
        import librosa

        timed("librosa.onset_detect", "onset", lambda: librosa.onset.onset_detect(y=x, sr=SAMPLE_RATE, hop_length=160),
              "spectral flux + peak picking (no learning)")
        timed("librosa.pyin", "pitch", lambda: librosa.pyin(x, fmin=50, fmax=2000, sr=SAMPLE_RATE, frame_length=1024,
                                                             hop_length=160), "probabilistic YIN")
    except ImportError:
        pass
    try:
        import torchcrepe

        xt = torch.from_numpy(x)[None]
        for model in ("tiny", "full"):
            timed(f"torchcrepe-{model}", "pitch", lambda m=model: torchcrepe.predict(xt, SAMPLE_RATE, 160, 50, 2000, m,
                                                                                      batch_size=512, device="cpu"),
                  "CREPE, 10 ms hop")
    except Exception:  # ImportError, or a torchaudio built for another torch
        pass
    try:
        from swift_f0 import SwiftF0

        det = SwiftF0(threads=1)
        timed("swift-f0", "pitch", lambda: det.detect(x, SAMPLE_RATE), "18k-parameter ONNX CNN, 16 ms hop, 1 thread")
    except ImportError:
        pass
    try:
        import pesto

        xt = torch.from_numpy(x)
        timed("pesto", "pitch", lambda: pesto.predict(xt, SAMPLE_RATE, step_size=10.0), "PESTO, 10 ms hop")
    except Exception:  # ImportError, or a torchaudio built for another torch
        pass
    try:
        import aubio

        def aubio_run(make, hop=160):
            det = make()
            for i in range(0, len(x) - hop + 1, hop):
                det(x[i:i + hop])

        timed("aubio onset (specflux)", "onset", lambda: aubio_run(lambda: aubio.onset("specflux", 1024, 160, SAMPLE_RATE)),
              "streaming spectral flux, 10 ms hop")
        timed("aubio pitch (yinfft)", "pitch", lambda: aubio_run(lambda: aubio.pitch("yinfft", 1024, 160, SAMPLE_RATE)),
              "streaming YIN-FFT, 10 ms hop")
    except ImportError:
        pass
    return out


def collect(paths: list[Path], tasks: list[str]) -> list[Path]:
    from edgemir.bundle import read_card

    if not paths:
        paths = [Path(__file__).parent / "models"]
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(p.rglob("*.ts"))
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{p}: no such bundle or folder")
    files = [f for f in files if read_card(f).get("task") in tasks]
    if not files:
        raise UserError("no bundles to benchmark")
    return files


def cmd_bench(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from edgemir.app import parse_tasks
    from edgemir.bundle import load_bundle

    torch.set_num_threads(args.threads)
    tasks = parse_tasks(args.tasks)
    if args.soak:
        from edgemir.app import load_models
        from edgemir.audio_io import DEMO
        from edgemir.soak import print_soak, soak

        folder = args.bundles[0] if args.bundles and args.bundles[0].is_dir() else None
        res = soak(load_models(tasks, folder), args.soak, args.soak_clip or DEMO)
        print_soak(res, Console())
        if args.json:
            args.json.write_text(json.dumps({"schema_version": SCHEMA_VERSION, "machine": machine(), "soak": res}, indent=1))
        return 0 if res["rss_growth_mb"] < 20 else 1
    files = collect(args.bundles, tasks)
    con = Console(stderr=True)
    rows = []
    for f in files:
        con.log(f"benchmarking {f.name}")
        rows.append(bench_bundle(f, args.threads))
    # speed-up over the dense bundle of the same task, measured in this run
    for r in rows:
        dense = [d for d in rows if d["task"] == r["task"] and d["mode"] == "dense"]
        r["speedup_vs_dense"] = dense[0]["hop_ms"]["p50"] / r["hop_ms"]["p50"] if dense else None
    smallest = {}
    for r in rows:
        if r["task"] not in smallest or r["params"] < smallest[r["task"]]["params"]:
            smallest[r["task"]] = r
    engine = bench_engine({t: load_bundle(Path(r["path"])) for t, r in smallest.items()}, args.seconds)
    peers = bench_peers()
    report = {"schema_version": SCHEMA_VERSION, "machine": machine(), "threads": args.threads, "bundles": rows,
              "engine": engine, "peers": peers, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    t = Table(title=f"edgemir bench — {report['machine']['arch']}, {args.threads} thread(s)")
    wide = getattr(args, "wide", False)
    cols = {  # name -> cell; the narrow table (80 columns) keeps the ones marked True
        "bundle": (True, lambda r: r["bundle"]), "task": (False, lambda r: r["task"]), "mode": (False, lambda r: r["mode"]),
        "removed": (True, lambda r: f"{(r['fraction_removed'] or 0):.0%}"), "params": (False, lambda r: f"{r['params']:,}"),
        "KB": (True, lambda r: f"{r['bytes'] / 1024:.0f}"),
        "MFLOP/s": (False, lambda r: f"{(r['flops_per_second'] or 0) / 1e6:.1f}"),
        "hop p50": (True, lambda r: f"{r['hop_ms']['p50']:.3f}"), "p99": (True, lambda r: f"{r['hop_ms']['p99']:.3f}"),
        "RTF": (False, lambda r: f"{r['rtf']:.4f}"),
        "speed-up": (True, lambda r: f"{r['speedup_vs_dense']:.1f}x" if r["speedup_vs_dense"] else "—"),
        "score": (True, lambda r: f"{r['score']:.3f}" if r["score"] is not None else "—"),
    }
    shown = [c for c, (narrow, _) in cols.items() if wide or narrow]
    for c in shown:
        t.add_column(c, justify="right" if c not in ("bundle", "task", "mode") else "left")
    for r in rows:
        t.add_row(*(cols[c][1](r) for c in shown))
    Console().print(t)
    pt = Table(title="peers (not ours): cost per second of audio")
    for c in ("peer", "task", "ms/s audio") + (("note",) if wide else ()):
        pt.add_column(c)
    for p in peers:
        pt.add_row(p["peer"], p["task"], f"{p['ms_per_second_audio']:.1f}" if "ms_per_second_audio" in p else "error",
                   *((p.get("note", p.get("error", "")),) if wide else ()))
    ours = Table(title="ours: cost per second of audio (hop p50 × 100)")
    ours.add_column("bundle")
    ours.add_column("ms per s of audio")
    for r in rows:
        ours.add_row(r["bundle"], f"{r['hop_ms']['p50'] * 100:.1f}")
    Console().print(ours)
    Console().print(pt)
    e = engine
    Console().print(f"engine ({', '.join(e['tasks'])}), paced {e['seconds']:.0f} s:\n"
                    f"  CPU {e['cpu_percent_one_core']:.1f}% of one core, latency p50 {e['latency_ms']['p50']:.0f} ms "
                    f"p99 {e['latency_ms']['p99']:.0f} ms, dropped hops {e['dropped_hops']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.plot:
        plot(report, args.plot)
    return 0


def plot(report: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib (pip install matplotlib)") from None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for task in TASKS:
        rs = sorted([r for r in report["bundles"] if r["task"] == task and r["score"] is not None],
                    key=lambda r: r["hop_ms"]["p50"])
        if rs:
            ax.plot([r["hop_ms"]["p50"] for r in rs], [r["score"] for r in rs], "o-", label=task)
    ax.set_xscale("log")
    ax.set_xlabel("latency per hop, ms (p50, single thread)")
    ax.set_ylabel("test score (cross-soundfont)")
    ax.set_title(f"score vs latency — {report['machine']['cpu']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
