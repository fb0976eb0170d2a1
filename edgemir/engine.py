"""The engine: audio samples -> shared STFTs -> each task's model on its context -> decoders -> events.

One code path for live, paced-file and unpaced (offline/evaluation) analysis: every caller
pushes sample blocks and receives events. One STFT runs per framing the loaded bundles use (onsets
read the causal one, the other tasks share the centred one). Models run incrementally
on blocks of ``block`` new frames, each layer keeping its own cached context, which gives the batch outputs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from edgemir.bundle import frozen_for_device
from edgemir.decoders import Decoder, Event
from edgemir.errors import UserError
from edgemir.frontend import CENTRED, Framing, StreamingSTFT, frame_levels_db
from edgemir.labels import FRAME_RATE, HOP, SAMPLE_RATE
from edgemir.refine import PitchRefiner
from edgemir.tasks import REGISTRY, make_decoder


class TaskRunner:
    """One task: the bundle's stream state (each layer's cached context, recurrent state) and its
    decoder. Each call runs the network on the new frames only (``step``)."""

    def __init__(self, task: str, module, card: dict, decoder: Decoder | None = None, block: int = 4) -> None:
        self.task = task
        if isinstance(module, torch.jit.ScriptModule):  # (training evaluates its eager nets through here too)
            module = frozen_for_device(module)
        self.module = module
        self.card = card
        self.rf = int(card["receptive_field"])
        self.la = int(card["lookahead"])
        self.framing = Framing.from_card(card["frontend"]) if "frontend" in card else CENTRED
        self.block = max(1, block)
        self.decoder = decoder or make_decoder(task)
        # f0: the STFT phase refines the model's coarse f0 (tuner precision); its cents row is decoded
        self.refiner = PitchRefiner(self.la) if REGISTRY[task].refine else None
        if self.refiner is not None and self.framing != CENTRED:
            raise UserError(f"{task} bundle: its framing {self.framing} is not the centred one whose phases the pitch "
                            "refiner reads")
        self.silence = torch.zeros(1, self.framing.n_bins)
        with torch.inference_mode():  # left context of silence before the first frame, as in training
            y, self.state = module.step(self.silence.repeat(self.rf - 1 - self.la, 1), module.initial_stream())
        self.pending = torch.zeros(0, self.framing.n_bins)  # spectra waiting for a full block
        # index of the next output frame: with a negative look-ahead the silence already decided the first
        # -lookahead frames (nothing to report there); each output then gets the newest frame's level
        self.next_out = int(y.shape[2])
        self.levels: list[float] = []
        self.ran = False  # whether the last push ran the model

    def push(self, spec: torch.Tensor, levels: np.ndarray, final: bool = False,
             cspec: torch.Tensor | None = None) -> list[Event]:
        if self.refiner is not None and cspec is not None and cspec.shape[0]:
            self.refiner.add(cspec)
        if spec.shape[0]:
            self.pending = torch.cat([self.pending, spec]) if self.pending.shape[0] else spec
            self.levels.extend(levels.tolist())
        if final:  # right context of silence so the last frames get outputs
            self.pending = torch.cat([self.pending, self.silence.repeat(max(0, self.la), 1)])
        events: list[Event] = []
        self.ran = False
        if self.pending.shape[0] and (self.pending.shape[0] >= self.block or final):
            self.ran = True
            with torch.inference_mode():  # (no autograd bookkeeping: 10-20% less per call than no_grad here)
                y, self.state = self.module.step(self.pending, self.state)
            self.pending = torch.zeros(0, self.framing.n_bins)
            ready = y.shape[2]
            if ready:
                lv = np.asarray(self.levels[:ready])
                self.levels = self.levels[ready:]
                probs = y[0].numpy()
                if self.refiner is not None:
                    probs = self.refiner.apply(probs, self.next_out)
                events = self.decoder.push(probs, self.next_out, lv)
                self.next_out += ready
        if final:
            events += self.decoder.finish()
        return events


@dataclass
class Stats:
    """Running counters; per-block figures keep only the recent ones (a service runs for months)."""

    hops: int = 0  # (xruns and gaps are the source's to count: they happen before the engine)
    blocks: int = 0
    compute_total_ms: float = 0.0
    compute_ms: deque = field(default_factory=lambda: deque(maxlen=4096))  # per block, all tasks together

    def add_compute(self, ms: float) -> None:
        self.blocks += 1
        self.compute_total_ms += ms
        self.compute_ms.append(ms)

    def percentile(self, xs, q: float) -> float:
        return float(np.percentile(np.asarray(xs), q)) if len(xs) else float("nan")


class Engine:
    """Push samples (mono float32 at 16 kHz) and get events back, in audio-time order per task."""

    def __init__(self, runners: list[TaskRunner]) -> None:
        self.runners = runners
        lat = self.algorithmic_latency_s
        self.order = sorted(runners, key=lambda r: lat[r.task])  # the earliest-reporting task runs first
        # one STFT per framing in use, the latest-completing first (its frames count the hops)
        framings = sorted({r.framing for r in runners} or {CENTRED}, key=lambda f: -f.right)
        self.stfts = {f: StreamingSTFT(f) for f in framings}
        self.newest = framings[-1]  # the earliest-completing framing: the level meter reads the newest audio
        self.frames = 0
        self.stats = Stats()
        self.level_db = -120.0

    @property
    def algorithmic_latency_s(self) -> dict[str, float]:
        """Per task: the window's reach past its frame + model look-ahead + decoder delay + block wait (no
        compute)."""
        return {r.task: r.framing.right / SAMPLE_RATE + (r.la + r.decoder.delay_frames + r.block - 1) / FRAME_RATE
                for r in self.runners}

    def push(self, samples: np.ndarray, final: bool = False) -> list[Event]:
        return [e for events, _ in self.push_each(samples, final) for e in events]

    def push_each(self, samples: np.ndarray, final: bool = False) -> Iterator[tuple[list[Event], float]]:
        """``push`` one task at a time, the earliest-reporting first, so that a live onset never waits for the
        chord model: yields (the task's events, seconds since this push began). Each framing's STFT runs when
        the first task on it does."""
        t0 = time.perf_counter()
        spectra: dict[Framing, tuple] = {}
        ran = False
        for r in self.order:
            if r.framing not in spectra:
                spectra[r.framing] = self._spectra(r.framing, samples, final)
            c, spec, levels = spectra[r.framing]
            if spec.shape[0] or final:  # (a part of a hop: a 256-sample period at 48 kHz is half of one)
                events = r.push(spec, levels, final, c)
                ran = ran or r.ran
                yield events, time.perf_counter() - t0
        for f in self.stfts:  # (no runner: the level meter's STFT)
            if f not in spectra:
                spectra[f] = self._spectra(f, samples, final)
        n = spectra[next(iter(self.stfts))][1].shape[0]  # frames of the latest-completing framing
        self.frames += n
        self.stats.hops += n
        if ran:  # a block that ran models (not a hop that only waited)
            self.stats.add_compute((time.perf_counter() - t0) * 1000)

    def _spectra(self, f: Framing, samples: np.ndarray, final: bool) -> tuple:
        """(complex, magnitude, levels in dB) of the frames that ``samples`` complete on framing ``f``."""
        stft = self.stfts[f]
        with torch.inference_mode():
            c = stft.push(samples) if len(samples) else torch.zeros(0, f.n_bins, dtype=torch.complex64)
            if final:
                c = torch.cat([c, stft.flush()])
            spec = c.abs()
        levels = frame_levels_db(spec) if spec.shape[0] else np.zeros(0)
        if f == self.newest and levels.shape[0]:
            self.level_db = float(levels[-1])
        return c, spec, levels

    def finish(self) -> list[Event]:
        return self.push(np.zeros(0, dtype=np.float32), final=True)


def analyze_array(engine: Engine, audio: np.ndarray, block_s: float = 1.0) -> list[Event]:
    """Unpaced analysis of a whole signal through the streaming path."""
    events: list[Event] = []
    step = int(block_s * SAMPLE_RATE) // HOP * HOP
    for i in range(0, len(audio), step):
        events += engine.push(audio[i:i + step])
    events += engine.finish()
    dur = len(audio) / SAMPLE_RATE
    return [e for e in events if e.t <= dur + 1e-9]
