"""Wiring: bundles -> engine; the live loop (source -> engine -> sinks/display); file analysis."""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from edgemir.bundle import Bundle, find_bundles, load_bundle
from edgemir.decoders import Event
from edgemir.engine import Engine, TaskRunner
from edgemir.errors import UserError
from edgemir.frontend import N_FFT
from edgemir.labels import HOP, SAMPLE_RATE, TASKS
from edgemir.sources import Source
from edgemir.tasks import REGISTRY, make_decoder


def parse_tasks(s: str | None) -> list[str]:
    """``--tasks``: None means all; an empty list, an unknown or a repeated task is an error."""
    if s is None:
        return list(TASKS)
    tasks = [t.strip() for t in s.split(",") if t.strip()]
    if not tasks:
        raise UserError(f"--tasks is empty (choose from {', '.join(TASKS)})")
    for t in tasks:
        if t not in TASKS:
            raise UserError(f"unknown task {t!r} (choose from {', '.join(TASKS)})")
    dup = sorted({t for t in tasks if tasks.count(t) > 1})
    if dup:
        raise UserError(f"--tasks names {', '.join(dup)} twice")
    return tasks


def load_models(tasks: list[str], models_dir: Path | None, required: bool = True) -> dict[str, Bundle]:
    paths = find_bundles(models_dir, tasks)
    missing = [t for t in tasks if t not in paths]
    if missing and required:
        where = f"{models_dir} or " if models_dir else ""
        raise UserError(f"no bundle for {', '.join(missing)} in {where}{Path(__file__).parent / 'models'}")
    return {t: load_bundle(p) for t, p in paths.items()}


# hops per model run of the tasks a player hears late: a drummer feels 30 ms (docs/streaming.md); the others run
# every ``block`` hops


def build_engine(bundles: dict[str, Bundle], block: int = 4, decoder_overrides: dict | None = None,
                 live_blocks: bool = True) -> Engine:
    """The engine for loaded bundles: onset and drums run every hop, pitch every 2, the rest every ``block``
    (every task every ``block`` without ``live_blocks``)."""
    runners = []
    for task, b in bundles.items():
        kw = dict(b.card.get("decoder", {}))
        kw.update((decoder_overrides or {}).get(task, {}))
        if "thresholds" in kw:
            kw["thresholds"] = tuple(kw["thresholds"])
        runners.append(TaskRunner(task, b.module, b.card, make_decoder(task, **kw),
                                  block=min(block, REGISTRY[task].live_block or block) if live_blocks else block))
    return Engine(runners)


def summary_of(engine: Engine) -> dict:
    """What needs the whole stream: (label, per-window labels) of each ``label``-format task."""
    return {r.task: r.decoder.summary() for r in engine.runners if REGISTRY[r.task].format == "label"}


@dataclass
class LiveState:
    """What the display and the status line show."""

    events: deque = field(default_factory=lambda: deque(maxlen=500))  # the latest events
    latencies: deque = field(default_factory=lambda: deque(maxlen=2000))  # ms, per event, after warm-up
    warmup_latencies: list = field(default_factory=list)  # ms, per event, in the first WARMUP_S of audio
    started: float = field(default_factory=time.perf_counter)
    cpu0: float = field(default_factory=time.process_time)
    audio_s: float = 0.0
    cpu_hist: deque = field(default_factory=lambda: deque(maxlen=10))  # (wall, cpu) every 0.5 s


WARMUP_S = 2.0  # audio seconds whose latencies are kept out of the percentiles


class Pipeline:
    """Source -> engine -> sinks: the worker loop of ``run`` and of ``analyze`` (pull hops from the
    source, push them through the engine, fan out events). The engine's ``TaskRunner``s run the models."""

    def __init__(self, source: Source, engine: Engine, sinks: list, on_events=None, notify=None) -> None:
        self.source, self.engine, self.sinks = source, engine, sinks
        self.on_events = on_events
        self.notify = notify
        self.state = LiveState()
        self.la = {r.task: r.la for r in engine.runners}
        self.right = {r.task: r.framing.right for r in engine.runners}  # samples a frame's window reaches past it
        if hasattr(source, "frame_offset") and self.right:  # a paced file delivers up to the newest complete frame
            source.frame_offset = min(self.right.values())
        self.samples = 0
        self.nonfinite = 0  # samples that were NaN/inf (replaced by 0)
        self.clipped = 0  # samples at or over full scale
        self.peak = 0.0

    def latency_ms(self, e: Event, block_compute_s: float) -> float:
        needed = (e.frame + self.la.get(e.task, 0)) * HOP + self.right.get(e.task, N_FFT // 2)
        algorithmic = max(0, needed - e.t * SAMPLE_RATE) / SAMPLE_RATE
        arrived = self.source.arrival_time(needed)
        if arrived is None:  # unpaced: algorithmic latency plus this block's compute
            return (algorithmic + block_compute_s) * 1000
        return (time.perf_counter() - arrived + algorithmic) * 1000

    def step(self, max_samples: int = 16000) -> bool:
        """One pass; False at the end of the source."""
        x = self.source.read(max_samples)
        if x is None:
            events = self.engine.finish()
            self._fan_out(events, 0.0)
            return False
        if len(x) == 0:  # nothing yet (or the device is away): the loop is healthy, so keep pinging
            if self.notify:
                self.notify.ping()
            self.source.wait(0.05)  # until audio arrives (a device wakes the loop once per block)
            return True
        x = self._sanitise(x)
        self.samples += len(x)
        self.state.audio_s = self.samples / SAMPLE_RATE
        for events, compute_s in self.engine.push_each(x):  # each task's events out as soon as they are decided
            if events:
                self._fan_out(events, compute_s)
        if self.notify:
            self.notify.ping()
        return True

    def _sanitise(self, x: np.ndarray) -> np.ndarray:
        """Non-finite samples (a broken driver, a bad plug-in upstream) become 0 and are counted, so
        they can never reach the models; clipping is counted and the peak kept."""
        bad = ~np.isfinite(x)
        if bad.any():
            self.nonfinite += int(bad.sum())
            x = np.where(bad, np.float32(0), x).astype(np.float32)
        if len(x):
            peak = float(np.abs(x).max())
            self.peak = max(self.peak, peak)
            if peak >= 0.999:  # counted only in the rare block that reaches full scale
                self.clipped += int(np.count_nonzero(np.abs(x) >= 0.999))
        return x

    def _fan_out(self, events: list[Event], compute_s: float) -> None:
        for i, e in enumerate(events):
            lat = self.latency_ms(e, compute_s)
            if self.state.audio_s >= WARMUP_S:  # the first seconds (caches, allocator) are shown apart
                self.state.latencies.append(lat)
            else:
                self.state.warmup_latencies.append(lat)
            off = self.source.time_offset(e.frame * HOP)
            if off:  # after an outage: times stay on the wall clock
                e = events[i] = replace(e, t=e.t + off)
            for s in self.sinks:
                s.emit(e, lat)
        if events:
            self.state.events.extend(events)
            for s in self.sinks:
                s.flush()
        if self.on_events:
            self.on_events(events)

    def status(self) -> dict:
        st = self.engine.stats
        now, cpu_now = time.perf_counter(), time.process_time()
        hist = self.state.cpu_hist  # CPU over the last ~5 s, not since start-up (model loading, warm-up)
        if not hist or now - hist[-1][0] >= 0.5:
            hist.append((now, cpu_now))
        wall0, cpu0 = hist[0]
        cpu = (cpu_now - cpu0) / (now - wall0) * 100 if now - wall0 > 0.2 else float("nan")
        comp = list(islice(st.compute_ms, max(0, len(st.compute_ms) - 500), None))
        return {"compute_p50_ms": st.percentile(comp, 50), "compute_p99_ms": st.percentile(comp, 99),
                "cpu_percent": cpu, "xruns": self.source.xruns,
                "gap_s": self.source.gap_seconds, "latency_p50_ms": st.percentile(self.state.latencies, 50),
                "latency_p99_ms": st.percentile(self.state.latencies, 99), "hops": st.hops,
                "level_db": self.engine.level_db, "audio_s": self.state.audio_s,
                "nonfinite": self.nonfinite + getattr(self.source, "nonfinite", 0), "clipped": self.clipped,
                "peak": self.peak, "lost_for": getattr(self.source, "lost_for", None),
                "retry_s": getattr(self.source, "retry_s", None),
                "warmup_latency_p99_ms": st.percentile(self.state.warmup_latencies, 99)}


def set_threads(n: int) -> None:
    torch.set_num_threads(max(1, n))
    os.environ.setdefault("OMP_NUM_THREADS", str(n))


# Audio read and run per pass of ``analyze``: one second (100 frames per model call) keeps every activation
# at or under about 1 MB, which the heap reuses (``cli.bound_heap``); passes of 10 s (activations of several
# MB) let RSS grow 81 MB an hour, or cost 1.6-1.8x the CPU when served by mmap (docs/streaming.md).
ANALYZE_STEP_S = 1.0


def analyze_file(path: Path, bundles: dict[str, Bundle], out: Path, block: int = 100, progress=None) -> dict:
    """Offline analysis through the same engine and runner (unpaced, streamed from disk);
    ``progress(seconds_done)`` is called after each block."""
    from edgemir.sinks import AnalysisWriter
    from edgemir.sources import FileSource

    src = FileSource(path)
    eng = build_engine(bundles, block=block)
    writer = AnalysisWriter(Path(out), Path(path).stem, list(bundles), src.duration)
    runner = Pipeline(src, eng, [writer])
    try:
        src.start()
        while runner.step(max_samples=int(SAMPLE_RATE * ANALYZE_STEP_S)):
            if progress:
                progress(runner.samples / SAMPLE_RATE)
        written = writer.close(summary_of(eng))
    except OSError as e:  # the output side: a full disk, a folder that went away (input errors are UserErrors)
        writer.abort()
        raise UserError(f"{path}: cannot write results to {out}: {e.strerror or e}") from None
    except BaseException:  # including Ctrl-C and SIGTERM (see cli): nothing half-written is left
        writer.abort()
        raise
    finally:
        src.stop()
    return {"file": str(path), "duration": src.duration, "events": writer.n_json,
            "written": [str(p) for p in written], "compute_ms_total": eng.stats.compute_total_ms, "peak": runner.peak,
            "clipped": runner.clipped}
