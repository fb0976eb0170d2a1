"""Tuner precision for the pitch model: the STFT phase refines the salience's 20-cent estimate.

The model finds the note and a coarse f0 (a weighted average of 20-cent bins, a few cents of bias); a
phase vocoder then measures the partials near each harmonic of it from the phase advance between the two
newest frames that the model had seen (so the result is the same for any block size, live or offline).
The refined f0 replaces the coarse one only when they agree within ``max_cents`` (a semitone: the model's
coarse f0 can be 20-60 cents off on pure sines, where there is one partial to read), and only on steady
notes: steady tones are read to a fraction of a cent, while glides and vibrato, where the two frames lag
the model's frame, keep the model's estimate. librosa's ``reassigned_spectrogram``/``piptrack`` work on
whole signals, not frame pairs of a running stream, hence this small stage.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import torch

from edgemir.frontend import N_FFT
from edgemir.labels import HOP, PITCH_CENTS_PER_BIN, PITCH_FMIN, SAMPLE_RATE

DF = SAMPLE_RATE / N_FFT  # Hz per STFT bin
MAX_HARMONICS = 8


def coarse_cents(sal: np.ndarray, halfwidth: int = 4) -> np.ndarray:
    """[bins, T] salience -> cents above C1 per frame: weighted average around the peak (CREPE's decoding)."""
    bins = sal.shape[0]
    cents = np.arange(bins) * PITCH_CENTS_PER_BIN
    peaks = np.argmax(sal, axis=0)
    out = np.empty(sal.shape[1])
    for k, p in enumerate(peaks):
        lo, hi = max(0, p - halfwidth), min(bins, p + halfwidth + 1)
        w = sal[lo:hi, k]
        out[k] = float(np.sum(w * cents[lo:hi]) / (np.sum(w) + 1e-9))
    return out


def phase_f0(x1: np.ndarray, x2: np.ndarray, f_coarse: float, max_cents: float) -> float | None:
    """f0 from the phase advance of the partials near the harmonics of ``f_coarse`` between complex
    spectra ``x1`` and ``x2`` one hop apart, or None when no partial agrees within ``max_cents``."""
    mag = np.abs(x2)
    floor = 0.01 * mag.max()  # partials within 40 dB of the strongest
    ests, weights = [], []
    for h in range(1, MAX_HARMONICS + 1):
        fh = h * f_coarse
        if fh > 0.45 * SAMPLE_RATE:
            break
        k0 = int(round(fh / DF))
        lo, hi = max(1, k0 - 1), min(len(mag) - 1, k0 + 2)
        if lo >= hi:
            break
        k = lo + int(np.argmax(mag[lo:hi]))
        if mag[k] < floor or mag[k] < mag[k - 1] or mag[k] < mag[k + 1]:
            continue  # no partial here: a side lobe's phase belongs to another partial
        dphi = np.angle(x2[k]) - np.angle(x1[k]) - 2 * math.pi * k * HOP / N_FFT
        dev = (dphi + math.pi) % (2 * math.pi) - math.pi
        off = dev * N_FFT / (2 * math.pi * HOP)  # bins between the partial and bin k's centre
        f = (k + off) * DF / h
        if abs(off) <= 1.0 and f > 0 and abs(1200 * math.log2(f / f_coarse)) <= max_cents:
            ests.append(f)
            # partials closer than 4 bins (f0 < 62.5 Hz) overlap; a high one is then less disturbed per cent
            weights.append(mag[k] * (h if f_coarse < 4 * DF else 1.0 / h))
    if not ests or sum(weights) <= 0:
        return None
    return float(np.average(ests, weights=weights))


class PitchRefiner:
    """Keeps the newest complex spectra; turns the model's salience into refined cents per output frame.

    Output frame j is decided when input frame ``j + lookahead`` arrives: the pair measured is frames j-1
    and j when they exist by then (look-ahead >= 0), else the newest two. Only steady notes are refined
    (the coarse estimate moved less than ``steady_cents`` since the previous frame): on vibrato and glides a
    pair of frames that lags the labelled one would move the estimate the wrong way. The result is appended
    to the probabilities as one more row (cents above C1), which the pitch decoder reads."""

    # max_cents 100 against 15 (tuner tones within ±2 cents on the right note, of 69 each): harmonic 65 vs 56,
    # sine 51 vs 22, pluck 63 vs 56; dev-real RPA 0.8807 vs 0.8802. A neighbouring partial read by mistake is
    # (h+1)/h off, over 200 cents for the 8 harmonics searched, so it is still refused.
    def __init__(self, lookahead: int, max_cents: float = 100.0, steady_cents: float = 10.0, keep: int = 4096) -> None:
        self.la = lookahead
        self.max_cents = max_cents
        self.steady_cents = steady_cents
        self.frames: deque[np.ndarray] = deque(maxlen=keep)
        self.first = 0  # input frame index of frames[0]
        self.prev = float("nan")  # the previous output frame's coarse cents

    def add(self, cspec: torch.Tensor) -> None:
        """Append complex spectra [n, N_BINS] of the next input frames."""
        for row in cspec.numpy():
            if len(self.frames) == self.frames.maxlen:
                self.first += 1
            self.frames.append(row)

    def _frame(self, i: int) -> np.ndarray | None:
        k = i - self.first
        return self.frames[k] if 0 <= k < len(self.frames) else None

    def apply(self, probs: np.ndarray, first: int) -> np.ndarray:
        """[bins + 1, T] salience and voicing for output frames first.. -> [bins + 2, T] with refined cents."""
        cents = coarse_cents(probs[:-1])
        out = cents.copy()
        for k in range(probs.shape[1]):
            prev, self.prev = self.prev, float(cents[k])
            if not abs(cents[k] - prev) < self.steady_cents:
                continue
            j = first + k + min(self.la, 0)
            x1, x2 = self._frame(j - 1), self._frame(j)
            if x1 is None or x2 is None:
                continue
            fc = PITCH_FMIN * 2 ** (cents[k] / 1200)
            f = phase_f0(x1, x2, fc, self.max_cents)
            if f is not None:
                out[k] = 1200 * math.log2(f / PITCH_FMIN)
        # later outputs never look further back than the next frame pair: drop what is older (a block's
        # worth of spectra is all this keeps, not the deque's bound)
        oldest = first + probs.shape[1] + min(self.la, 0) - 1
        while self.frames and self.first < oldest:
            self.frames.popleft()
            self.first += 1
        return np.concatenate([probs, out[None, :].astype(probs.dtype)])
