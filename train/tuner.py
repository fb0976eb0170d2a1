"""The tuner check: steady 1-s tones on every semitone from E1 to C7, read by a pitch bundle through
`edgemir analyze`'s engine, scored per tone (median cents off, share of voiced frames on the right note).

Three kinds of tone, none of them from the training generator: harmonic (a sawtooth-like series), a pure
sine, and a Karplus-Strong pluck whose exact pitch is computed from its loop delay.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import signal

from edgemir.labels import SAMPLE_RATE, note_name, tuning

KINDS = ("harmonic", "sine", "pluck")
LOWEST, HIGHEST = 28, 96  # E1 .. C7
KS_RATE = 96000  # the pluck runs at 96 kHz so the fractional delay is exact enough at C7, then resampled


def midi_hz(m: float, a4: float = 440.0) -> float:
    return a4 * 2.0 ** ((m - 69) / 12)


def _allpass_delay(eta: float, w: float) -> float:
    """Phase delay in samples of the first-order allpass (eta + z^-1) / (1 + eta z^-1) at w rad/sample."""
    z = np.exp(-1j * w)
    return float(-np.angle((eta + z) / (1 + eta * z)) / w)


def karplus_strong(f: float, seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A plucked string at about ``f`` Hz; returns (16-kHz audio, its exact fundamental in Hz).

    The loop is N samples + the two-point average (0.5 sample) + a first-order allpass (fraction d);
    its frequency solves f = rate / (N + 0.5 + allpass delay at f)."""
    import soxr

    total = KS_RATE / f
    n = int(math.floor(total - 0.5 - 0.1))
    d = total - 0.5 - n  # in [0.1, 1.1): the allpass's stable range
    eta = (1 - d) / (1 + d)
    fk = f
    for _ in range(20):  # the allpass's delay varies with frequency: iterate to the loop's real pitch
        fk = KS_RATE / (n + 0.5 + _allpass_delay(eta, 2 * math.pi * fk / KS_RATE))
    # one recursive filter: y = x + rho * (1 + z^-1)/2-average * allpass * z^-N * y, excited by a noise burst
    g = 10 ** (-3 / (20 * 2.0 * fk)) / math.cos(math.pi * fk / KS_RATE)  # the fundamental loses 3 dB per 2 s
    rho = 0.5 * g
    a = np.zeros(n + 3)
    a[0], a[1] = 1.0, eta
    a[n], a[n + 1], a[n + 2] = -rho * eta, -rho * (1 + eta), -rho
    x = np.zeros(int(seconds * KS_RATE))
    burst = rng.uniform(-1, 1, n)
    x[:n] = burst - burst.mean()
    out = signal.lfilter([1.0, eta], a, x)
    y16 = soxr.resample(out, KS_RATE, SAMPLE_RATE)
    return (y16 / (np.abs(y16).max() + 1e-12) * 0.5).astype(np.float32), fk


def tone(kind: str, m: int, seconds: float, rng: np.random.Generator, a4: float = 440.0) -> tuple[np.ndarray, float]:
    """(audio, exact f0) of one test tone."""
    f = midi_hz(m, a4)
    if kind == "pluck":
        return karplus_strong(f, seconds, rng)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    if kind == "sine":
        x = np.sin(2 * np.pi * f * t)
    else:
        k = np.arange(1, int(7900 / f) + 1)
        x = (np.sin(2 * np.pi * f * k[:, None] * t[None, :]) / k[:, None]).sum(0)
    env = np.minimum(1, t / 0.01) * np.minimum(1, (seconds - t) / 0.01)
    return (x * env / (np.abs(x).max() + 1e-12) * 0.5).astype(np.float32), f


def measure(bundle: Path | None = None, kinds=KINDS, notes=range(LOWEST, HIGHEST + 1), seconds: float = 1.0,
            a4: float = 440.0, seed: int = 0) -> list[dict]:
    """Read every tone through the engine; per tone: median cents off, right-note share, voiced share."""
    from edgemir.app import build_engine, load_models
    from edgemir.engine import analyze_array

    bundles = load_models(["pitch"], bundle)
    rng = np.random.default_rng(seed)
    gap = int(0.3 * SAMPLE_RATE)
    rows = []
    for kind in kinds:  # one signal per kind: the tones with 0.3 s of silence between them
        tones = [tone(kind, m, seconds, rng, a4) for m in notes]
        step = gap + int(seconds * SAMPLE_RATE)
        audio = np.zeros(gap + step * len(tones), np.float32)
        for i, (x, _) in enumerate(tones):
            audio[gap + i * step: gap + i * step + len(x)] = x
        events = analyze_array(build_engine(bundles, block=8), audio)
        times = np.array([e.t for e in events])
        values = np.array([e.value for e in events])
        for i, (m, (_, f)) in enumerate(zip(notes, tones)):
            a = (gap + i * step) / SAMPLE_RATE + 0.1  # skip the attack and the release
            b = a - 0.1 + seconds - 0.05
            f0 = values[(times >= a) & (times <= b)]
            voiced = f0[f0 > 0]
            cents = 1200 * np.log2(voiced / f) if len(voiced) else np.array([np.nan])
            right = np.mean([tuning(v, a4)[0] == m for v in voiced]) if len(voiced) else 0.0
            rows.append({"kind": kind, "midi": m, "note": note_name(m), "hz": f, "voiced": len(voiced) / max(len(f0), 1),
                         "median_cents": float(np.median(cents)), "right_note": float(right)})
    return rows


def octave_table(rows: list[dict]) -> list[str]:
    """Markdown rows: per kind and octave, the worst |median cents|, the right-note share, the voiced share."""
    out = ["| tone | octave | notes | worst median error (cents) | mean median error | right note | voiced |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for kind in dict.fromkeys(r["kind"] for r in rows):
        for octv in sorted({r["midi"] // 12 - 1 for r in rows if r["kind"] == kind}):
            rs = [r for r in rows if r["kind"] == kind and r["midi"] // 12 - 1 == octv]
            med = np.array([r["median_cents"] for r in rs])
            worst = np.nanmax(np.abs(med)) if np.isfinite(med).any() else float("nan")
            out.append(f"| {kind} | {octv} ({rs[0]['note']}–{rs[-1]['note']}) | {len(rs)} | {worst:.1f} | "
                       f"{np.nanmean(np.abs(med)):.1f} | {np.mean([r['right_note'] for r in rs]):.3f} | "
                       f"{np.mean([r['voiced'] for r in rs]):.2f} |")
    return out
