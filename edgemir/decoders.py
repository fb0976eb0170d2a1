"""Decoders: per-frame network outputs -> musical events. All are streaming (stateful, causal
up to a small documented delay), so live and offline analysis decode identically."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgemir.labels import CHORDS, DRUM_CLASSES, FAMILIES, FRAME_RATE, PITCH_FMIN


@dataclass
class Event:
    t: float  # seconds, on the audio timeline
    task: str
    value: object
    confidence: float
    frame: int = 0  # frame index whose audio decided the event (for latency accounting)
    extra: dict = field(default_factory=dict)


def frame_time(i: int) -> float:
    return i / FRAME_RATE


class Decoder:
    """Base: ``push(probs [C, K], first_frame, levels_db [K])`` -> events; ``finish()`` -> events."""

    task = ""  # the registry's task name (edgemir.tasks.make_decoder sets it; events carry it)
    delay_frames = 0  # extra frames the decoder waits before deciding

    def push(self, probs: np.ndarray, first: int, levels: np.ndarray) -> list[Event]:
        raise NotImplementedError

    def finish(self) -> list[Event]:
        return []


class PitchDecoder(Decoder):
    """f0 from the cents row that the engine's pitch refiner appends (the salience's weighted average, refined
    by the STFT phase on steady tones); voicing from the voicing output.

    Input rows: salience bins, voicing, cents above C1, steady (1 where the refiner read the same partials'
    f0 from two successive frame pairs). A frame is voiced when its voicing reaches ``threshold``, or, with
    ``steady`` set, when the refiner found it steady and its voicing reaches ``steady``: a tuner's held note
    whose timbre the model is unsure of (a plucked low string with a weak fundamental) is still read.
    Unvoiced frames carry the negated estimate (mir_eval's convention)."""

    task = "pitch"

    def __init__(self, threshold: float = 0.5, steady: float | None = None) -> None:
        self.threshold = threshold
        self.steady = threshold if steady is None else min(steady, threshold)

    def push(self, probs, first, levels):
        voicing, cents, steady = probs[-3], probs[-2], probs[-1]
        out = []
        for k in range(probs.shape[1]):
            f0 = PITCH_FMIN * 2 ** (float(cents[k]) / 1200)
            v = float(voicing[k])
            on = v >= self.threshold or (steady[k] > 0.5 and v >= self.steady)
            out.append(Event(frame_time(first + k), self.task, f0 if on else -f0, v, first + k))
        return out


class PeakPicker:
    """Causal peak picking with a threshold, a local-maximum window and a minimum gap.

    ``window`` w > 0: a frame is a peak when it is the maximum of the w frames either side (decided w frames
    late). w = 0 decides within the frame: an event where the activation rises through the threshold."""

    def __init__(self, threshold: float, window: int = 2, min_gap: int = 3) -> None:
        self.threshold, self.window, self.min_gap = threshold, window, min_gap
        self.hist = np.zeros(0, dtype=np.float32)
        self.first = 0  # frame index of hist[0]
        self.last = -10**9
        self._next = 0

    def push(self, act: np.ndarray, first: int) -> list[tuple[int, float]]:
        if len(self.hist) == 0:
            self.first = first
        self.hist = np.concatenate([self.hist, act.astype(np.float32)])
        return self._decide(final=False)

    def _decide(self, final: bool) -> list[tuple[int, float]]:
        w, out = self.window, []
        n = len(self.hist)
        end = n if final else n - w
        start = self._next
        for i in range(start, max(end, start)):
            a = self.hist[i]
            if a < self.threshold:
                continue
            if w == 0:
                if i > 0 and self.hist[i - 1] >= self.threshold:
                    continue
            else:
                lo, hi = max(0, i - w), min(n, i + w + 1)
                if a < self.hist[lo:hi].max() or (i > lo and self.hist[lo:i].max() == a):
                    continue
            f = self.first + i
            if f - self.last >= self.min_gap:
                out.append((f, float(a)))
                self.last = f
        self._next = max(end, start)
        keep = max(2 * w, 1)
        if self._next > keep:  # drop decided history, keep context for the window
            cut = self._next - keep
            self.hist = self.hist[cut:]
            self.first += cut
            self._next -= cut
        return out

    def finish(self) -> list[tuple[int, float]]:
        return self._decide(final=True)


class OnsetDecoder(Decoder):
    task = "onset"

    def __init__(self, threshold: float = 0.5, min_gap: int = 3, window: int = 2) -> None:
        self.pp = PeakPicker(threshold, window, min_gap)
        self.delay_frames = window

    def _events(self, peaks):
        return [Event(frame_time(f), self.task, a, a, f + self.delay_frames) for f, a in peaks]

    def push(self, probs, first, levels):
        return self._events(self.pp.push(probs[0], first))

    def finish(self):
        return self._events(self.pp.finish())


class DrumDecoder(Decoder):
    task = "drums"

    def __init__(self, thresholds: tuple[float, ...] = (0.5, 0.5, 0.5), min_gap: int = 3, window: int = 2) -> None:
        self.pps = [PeakPicker(t, window, min_gap) for t in thresholds]
        self.delay_frames = window

    def _events(self, c, peaks):
        return [Event(frame_time(f), self.task, DRUM_CLASSES[c], a, f + self.delay_frames, {"velocity": a})
                for f, a in peaks]

    def push(self, probs, first, levels):
        out = []
        for c, pp in enumerate(self.pps):
            out += self._events(c, pp.push(probs[c], first))
        return sorted(out, key=lambda e: e.t)

    def finish(self):
        out = []
        for c, pp in enumerate(self.pps):
            out += self._events(c, pp.finish())
        return sorted(out, key=lambda e: e.t)


class ChordDecoder(Decoder):
    """Online HMM filtering (sticky transitions) over frame posteriors, then a minimum duration:
    a new chord is reported once it has led for ``min_frames`` (dated back to when it started)."""

    task = "chord"

    def __init__(self, stay: float = 0.995, min_level_db: float = -70.0, min_frames: int = 10) -> None:
        self.min_frames = self.delay_frames = min_frames
        self.candidate, self.count, self.cand_start = -1, 0, 0
        n = len(CHORDS)
        self.log_trans = np.log(np.full((n, n), (1 - stay) / (n - 1)))
        np.fill_diagonal(self.log_trans, np.log(stay))
        self.belief = np.full(n, -np.log(n))
        self.current = -1
        self.min_level_db = min_level_db

    def push(self, probs, first, levels):
        out = []
        for k in range(probs.shape[1]):
            obs = np.log(np.clip(probs[:, k], 1e-6, 1.0))
            if levels[k] < self.min_level_db:
                obs = np.log(np.where(np.arange(len(CHORDS)) == 0, 0.9, 0.1 / 24))
            prior = np.logaddexp.reduce(self.belief[:, None] + self.log_trans, axis=0)
            b = prior + obs
            self.belief = b - np.logaddexp.reduce(b)
            best = int(np.argmax(self.belief))
            if best == self.current:
                self.candidate, self.count = -1, 0
                continue
            if best != self.candidate:
                self.candidate, self.count, self.cand_start = best, 0, first + k
            self.count += 1
            if self.count >= self.min_frames or self.current < 0:
                self.current, self.candidate, self.count = best, -1, 0
                out.append(Event(frame_time(self.cand_start), self.task, CHORDS[best], float(np.exp(self.belief[best])),
                                 first + k))
        return out


class InstrumentDecoder(Decoder):
    """Family posteriors averaged over the sounding frames of a sliding window."""

    task = "instrument"

    def __init__(self, window_s: float = 2.0, every_s: float = 0.5, min_level_db: float = -60.0) -> None:
        self.window = int(window_s * FRAME_RATE)
        self.every = int(every_s * FRAME_RATE)
        self.min_level_db = min_level_db
        self.buf: list[np.ndarray] = []
        self.count = 0
        self.total = np.zeros(len(FAMILIES))
        self.windows: dict[int, np.ndarray] = {}  # 4-s window index -> summed posteriors

    def summary(self, window_s: float = 4.0) -> tuple[str | None, list[tuple[float, float, str]]]:
        """Whole-stream family and per-window (start, end, family) labels of what was heard."""
        whole = FAMILIES[int(np.argmax(self.total))] if self.total.any() else None
        segs = [(i * window_s, (i + 1) * window_s, FAMILIES[int(np.argmax(v))]) for i, v in sorted(self.windows.items())]
        return whole, segs

    def push(self, probs, first, levels):
        out = []
        for k in range(probs.shape[1]):
            self.count += 1
            if levels[k] >= self.min_level_db:
                self.buf.append(probs[:, k])
                self.total += probs[:, k]
                w = int(frame_time(first + k) // 4.0)
                self.windows[w] = self.windows.get(w, 0) + probs[:, k]
                self.buf = self.buf[-self.window:]
            if self.count % self.every == 0 and self.buf:
                m = np.mean(self.buf, axis=0)
                i = int(np.argmax(m))
                out.append(Event(frame_time(first + k), self.task, FAMILIES[i], float(m[i]), first + k,
                                 {"posteriors": m.round(4).tolist()}))
        return out

