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
    bins, t = sal.shape
    if t == 0:
        return np.zeros(0)
    idx = np.argmax(sal, axis=0)[None, :] + np.arange(-halfwidth, halfwidth + 1)[:, None]  # [2h+1, T]
    inside = (idx >= 0) & (idx < bins)
    w = np.where(inside, np.take_along_axis(sal, np.clip(idx, 0, bins - 1), axis=0), 0.0)
    return np.sum(w * (idx * PITCH_CENTS_PER_BIN), axis=0) / (np.sum(w, axis=0) + 1e-9)


def _phase_freq(x1: np.ndarray, x2: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frequency in Hz, offset in bins from bin k's centre) of the partial in bins ``k`` [n, m] of each row,
    from the deviation of its phase advance over one hop from bin k's."""
    r = np.arange(len(k))[:, None]
    dphi = np.angle(x2[r, k]) - np.angle(x1[r, k]) - 2 * math.pi * k * HOP / N_FFT
    off = ((dphi + math.pi) % (2 * math.pi) - math.pi) * N_FFT / (2 * math.pi * HOP)
    return (k + off) * DF, off


def _peaks(mag: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(magnitude, whether a partial) at bins ``k`` [n, m] of each row: a local maximum within 40 dB of the
    row's strongest bin (``k`` within 1..bins-2)."""
    r = np.arange(len(k))[:, None]
    mk = mag[r, k]
    return mk, (mk >= 0.01 * mag.max(axis=1, keepdims=True)) & (mk >= mag[r, k - 1]) & (mk >= mag[r, k + 1])


def _fundamental(x1: np.ndarray, x2: np.ndarray, mag: np.ndarray, f_coarse: np.ndarray, lo: np.ndarray,
                 hi: np.ndarray) -> np.ndarray:
    """The strongest spectral peak whose phase-read frequency lies in [lo, hi] Hz per row, else ``f_coarse``.

    Below a few hundred Hz the model's salience cannot place a lone partial (a pure sine, a bass's
    fundamental) closer than an STFT bin: its 20-cent bins there interpolate 15.6-Hz spectra and a sine reads
    at a bin's centre, up to 5 semitones off at E1. The phase vocoder reads that partial exactly."""
    n, nb = mag.shape
    kl = np.clip(np.floor(lo / DF).astype(np.int64), 1, nb - 2)
    cand = kl[:, None] + np.arange(6)  # the window spans at most 4 bins (3 DF) plus the edges
    inside = cand <= np.minimum(np.ceil(hi / DF).astype(np.int64), nb - 2)[:, None]
    cand = np.clip(cand, 1, nb - 2)
    mc, peak = _peaks(mag, cand)
    f, off = _phase_freq(x1, x2, cand)
    ok = inside & peak & (np.abs(off) <= 1.0) & (f >= lo[:, None]) & (f <= hi[:, None])
    best = np.argmax(np.where(ok, mc, -1.0), axis=1)
    found = ok[np.arange(n), best]
    return np.where(found, f[np.arange(n), best], f_coarse)


# The divisors read: 4 and 3, not 2. A 2:1 sub-harmonic is also what rough voices (period doubling) and distorted
# two-note chords produce: with 2 as well, the synthetic valid split gained 1 point of RPA but dev-real's rough male
# voice and distorted guitar lost 0.9 and 1.2 (docs/live-design.md, session 22); without it both are unchanged.
DIVISORS = (4, 3)
# (divisor m, in-between multiple k of f/m) pairs that subharmonic() inspects: k not a multiple of m, up to 4.5 f
# (far enough that a missing fundamental alone does not fail the share)
_SUB = np.array([(m, k) for m in DIVISORS for k in range(1, int(4.5 * m) + 1) if k % m])


def subharmonic(x1: np.ndarray, x2: np.ndarray, f_coarse: np.ndarray, floor_hz: float, share: float = 0.8,
                rel: float = 0.05, tol_cents: float = 35.0) -> np.ndarray:
    """Per row, the divisor m in (4, 3, 1) such that ``f_coarse / m`` is the tone's fundamental.

    A salience model can read a low plucked string at its 3rd or 4th harmonic when the fundamental is weak (the
    pluck position and the body filter it out). The partials then sit at every multiple of f0 = f/m, also
    between the harmonics of f: f/m is taken when at least ``share`` of the in-between positions k*f/m (k not a
    multiple of m, up to 4.5 f) hold a partial (a local maximum within ``rel`` of the strongest harmonic of f,
    its phase-read frequency within ``tol_cents``), the largest m first; a harmonic tone at f has nothing
    there, and noise or a reverberating earlier note rarely reads at the right frequency on most of them.
    All divisors are read in one vectorised pass (this runs on every pitch frame)."""
    n, nb = x2.shape
    out = np.ones(n, np.int64)
    if n == 0:
        return out
    mag = np.abs(x2)
    r2 = np.arange(n)[:, None]
    kh = np.clip(np.round(np.arange(1, 5)[None, :] * f_coarse[:, None] / DF).astype(np.int64), 1, nb - 2)
    ref = np.maximum(np.maximum(mag[r2, kh - 1], mag[r2, kh]), mag[r2, kh + 1]).max(axis=1)  # [n]
    ms, ks = _SUB[:, 0], _SUB[:, 1]
    fk = f_coarse[:, None] * (ks / ms)[None, :]  # [n, K]
    cand = np.clip(np.round(fk / DF).astype(np.int64)[..., None] + np.arange(-1, 2), 1, nb - 2)  # [n, K, 3]
    k = np.take_along_axis(cand, np.argmax(mag[r2[..., None], cand], axis=2)[..., None], axis=2)[..., 0]
    mk, peak = _peaks(mag, k)
    f, _ = _phase_freq(x1, x2, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        found = peak & (mk >= rel * ref[:, None]) & (np.abs(1200 * np.log2(f / fk)) <= tol_cents)
    for m in DIVISORS:
        col = ms == m
        ok = (out == 1) & (f_coarse / m >= floor_hz) & (found[:, col].mean(axis=1) >= share)
        out[ok] = m
    return out


def phase_f0s(x1: np.ndarray, x2: np.ndarray, f_coarse: np.ndarray, max_cents: float,
              spread_hz: float | np.ndarray = 0.0) -> np.ndarray:
    """Per frame pair (rows of complex spectra ``x1``, ``x2`` one hop apart): f0 from the phase advance of
    the partials near the harmonics of ``f_coarse``, or NaN when no partial agrees within ``max_cents``.

    With ``spread_hz`` (per row, or one figure) the tolerance is the wider of ``max_cents`` and ``spread_hz``
    (the model's uncertainty in Hz at low pitches): the strongest partial within it is read first
    (``_fundamental``) and the harmonics are sought around that. For each harmonic h the partial is the
    strongest of the 3 bins around h*f0, if it is a local maximum within 40 dB of the frame's strongest bin;
    its frequency is bin k's centre plus the deviation of its phase advance from bin k's; the estimates that
    fall within ``max_cents`` of the fundamental searched are averaged by magnitude."""
    n, nb = x2.shape
    if n == 0:
        return np.zeros(0)
    mag = np.abs(x2)
    ratio = 2 ** (max_cents / 1200)
    spread = np.broadcast_to(np.asarray(spread_hz, dtype=np.float64), f_coarse.shape)
    f_lo = np.minimum(f_coarse / ratio, f_coarse - spread)
    f_hi = np.maximum(f_coarse * ratio, f_coarse + spread)
    if np.any(spread > 0):
        f_coarse = np.where(spread > 0, _fundamental(x1, x2, mag, f_coarse, f_lo, f_hi), f_coarse)
    h = np.arange(1, MAX_HARMONICS + 1)[None, :]
    fh = h * f_coarse[:, None]  # [n, H]
    k0 = np.round(fh / DF).astype(np.int64)
    lo, hi = np.maximum(1, k0 - 1), np.minimum(nb - 1, k0 + 2)
    usable = np.logical_and.accumulate((fh <= 0.45 * SAMPLE_RATE) & (lo < hi), axis=1)  # up to the first miss
    cand = lo[..., None] + np.arange(3)  # [n, H, 3]: the bins searched
    rows = np.arange(n)[:, None, None]
    cm = np.where(cand < hi[..., None], mag[rows, np.clip(cand, 0, nb - 1)], -np.inf)
    k = np.clip(lo + np.argmax(cm, axis=2), 1, nb - 2)  # [n, H]
    mk, peak = _peaks(mag, k)
    f, off = _phase_freq(x1, x2, k)
    f = f / h
    with np.errstate(divide="ignore", invalid="ignore"):
        cents = np.abs(1200 * np.log2(f / f_coarse[:, None]))
    ok = usable & peak & (np.abs(off) <= 1.0) & (f >= f_lo[:, None]) & (f <= f_hi[:, None]) & (cents <= max_cents)
    # partials closer than 4 bins (f0 < 62.5 Hz) overlap; a high one is then less disturbed per cent
    w = np.where(ok, mk * np.where(f_coarse[:, None] < 4 * DF, h, 1.0 / h), 0.0)
    tot = w.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        est = (np.where(ok, f, 0.0) * w).sum(axis=1) / tot
    return np.where(tot > 0, est, np.nan)


def phase_f0(x1: np.ndarray, x2: np.ndarray, f_coarse: float, max_cents: float) -> float | None:
    """``phase_f0s`` for one frame pair (None when no partial agrees)."""
    f = phase_f0s(x1[None, :], x2[None, :], np.array([f_coarse]), max_cents)[0]
    return None if np.isnan(f) else float(f)


class PitchRefiner:
    """Keeps the newest complex spectra; turns the model's salience into refined cents per output frame.

    Output frame j is decided when input frame ``j + lookahead`` arrives: the pair measured is frames j-1
    and j when they exist by then (look-ahead >= 0), else the newest two. Only steady notes are refined: the
    pair one hop older must read the same f0 within ``steady_cents``, and so must the model's coarse estimate
    of the previous frame (on vibrato and glides a pair that lags the labelled frame would move the estimate
    the wrong way). Below ``low_hz`` the model's estimate cannot place a lone partial closer than an STFT bin
    (on a pure sine it swings by hundreds of cents from frame to frame): there the partial is sought within
    ``spread_hz`` of it and only the signal's phases decide what is steady. The result is appended to the
    probabilities as two more rows (cents above C1, and 1 where the frame was steady), which the pitch decoder
    reads."""

    # max_cents 100 against 15 (tuner tones within ±2 cents on the right note, of 69 each): harmonic 65 vs 56,
    # sine 51 vs 22, pluck 63 vs 56; dev-real RPA 0.8807 vs 0.8802. A neighbouring partial read by mistake is
    # (h+1)/h off, over 200 cents for the 8 harmonics searched, so it is still refused. The low range (spread
    # 1.5 bins below 200 Hz, steadiness from phases there): harmonic 69, sine 69, pluck 64 of 69, dev-real RPA
    # 0.8801; the same gate everywhere (low_hz = inf) read 0.875, and the phase gate alone without the spread
    # 0.878 (the sines below 200 Hz were 100-560 cents off: bin centres). Spread 2 bins since session 25: synthetic
    # valid RPA 0.8837 (1.5) -> 0.8858 (2, 2.5 and 3 alike: the least reach of the plateau), dev-real unchanged;
    # the trimmed nets' coarse estimates of a few steady low tones were 1.5-2 bins off.
    def __init__(self, lookahead: int, max_cents: float = 100.0, steady_cents: float = 10.0, keep: int = 4096,
                 spread_hz: float = 2.0 * DF, low_hz: float = 200.0, floor_hz: float = 38.0,
                 recheck: int = 8, sub_max_hz: float = 1050.0) -> None:
        self.la = lookahead
        self.max_cents = max_cents
        self.spread_hz = spread_hz
        self.low_hz = low_hz
        self.floor_hz = floor_hz
        self.steady_cents = steady_cents
        self.frames: deque[np.ndarray] = deque(maxlen=keep)
        self.first = 0  # input frame index of frames[0]
        self.prev = float("nan")  # the previous output frame's coarse cents
        self.prev_f = float("nan")  # and its pair's phase-read f0 (NaN: none)
        self.recheck, self.sub_max_hz = recheck, sub_max_hz
        self.sub_m, self.sub_at, self.sub_age = 1, math.inf, 0  # the last divisor read, at which cents, how long ago

    def _divisors(self, pair: np.ndarray, cents: np.ndarray, voicing: np.ndarray) -> np.ndarray:
        """``subharmonic``'s divisor per frame (a fundamental under the model's estimate, as on a pluck read at a
        harmonic: the note moves down). It costs about 0.1 ms a frame, so it is read again only when the model's
        note moves by over half a semitone or every ``recheck`` frames, and not on frames the model calls
        unvoiced or above ``sub_max_hz`` (the 4th harmonic of C4: the strings whose bodies radiate a weak
        fundamental are the low ones); in between, over consecutive frames of a note, the last reading holds (the
        same for any block size)."""
        # which frames read (the choice never depends on a reading), then all their readings in one pass
        reads, src = [], np.full(len(cents), -1)  # src: the reading a frame takes (-1: none, -2: the last one)
        for i, (c, v) in enumerate(zip(cents.tolist(), voicing.tolist())):
            f = PITCH_FMIN * 2 ** (c / 1200)
            if v < 0.3 or not self.floor_hz * DIVISORS[-1] <= f <= self.sub_max_hz:
                self.sub_at = math.inf  # the note is interrupted: read again at the next frame
                continue
            if abs(c - self.sub_at) > 50 or self.sub_age >= self.recheck:
                reads.append(i)
                self.sub_at, self.sub_age = c, 0
            self.sub_age += 1
            src[i] = len(reads) - 1 if reads else -2
        m = np.ones(len(cents), np.int64)
        if reads:
            r = np.asarray(reads)
            got = subharmonic(pair[2 * r], pair[2 * r + 1], PITCH_FMIN * 2 ** (cents[r] / 1200), self.floor_hz)
        m[src == -2] = self.sub_m
        if reads:
            m[src >= 0] = got[src[src >= 0]]
            self.sub_m = int(got[-1])
        return m

    def add(self, cspec: torch.Tensor) -> None:
        """Append complex spectra [n, N_BINS] of the next input frames."""
        for row in cspec.numpy():
            if len(self.frames) == self.frames.maxlen:
                self.first += 1
            self.frames.append(row)

    def apply(self, probs: np.ndarray, first: int) -> np.ndarray:
        """[bins + 1, T] salience and voicing for output frames first.. -> [bins + 3, T] with refined cents and
        the steady flag."""
        cents = coarse_cents(probs[:-1])
        js = first + np.arange(len(cents)) + min(self.la, 0)  # the newer frame of each pair
        # the frames with a pair: a contiguous run that reaches the block's end (none only at a stream's start)
        sel = np.flatnonzero((js - 1 - self.first >= 0) & (js - self.first < len(self.frames)))
        if len(sel):
            pair = np.array([self.frames[i - self.first] for j in js[sel] for i in (j - 1, j)])
            cents[sel] -= 1200 * np.log2(self._divisors(pair, cents[sel], probs[-1, sel]))
        out = cents.copy()
        prev = np.concatenate([[self.prev], cents[:-1]])
        if len(cents):
            self.prev = float(cents[-1])
        f = np.full(len(cents), np.nan)
        steady = np.zeros(len(cents), probs.dtype)
        if len(sel):
            fc = PITCH_FMIN * 2 ** (cents[sel] / 1200)
            low = fc < self.low_hz
            f[sel] = phase_f0s(pair[0::2], pair[1::2], fc, self.max_cents, np.where(low, self.spread_hz, 0.0))
            older = np.concatenate([[self.prev_f], f[:-1]])[sel]  # the previous frame's pair, one hop older
            with np.errstate(invalid="ignore"):  # (NaN: not steady)
                good = (np.abs(1200 * np.log2(f[sel] / older)) < self.steady_cents) & (
                    low | (np.abs(cents[sel] - prev[sel]) < self.steady_cents))
            out[sel[good]] = 1200 * np.log2(f[sel][good] / PITCH_FMIN)
            steady[sel[good]] = 1.0
        if len(cents):
            self.prev_f = float(f[-1])
        # later outputs never look further back than the next frame pair: drop what is older (a block's
        # worth of spectra is all this keeps, not the deque's bound)
        oldest = first + probs.shape[1] + min(self.la, 0) - 1
        while self.frames and self.first < oldest:
            self.frames.popleft()
            self.first += 1
        return np.concatenate([probs, out[None, :].astype(probs.dtype), steady[None, :]])
