"""Audio realism applied at render time: room reverb, EQ, background noise, gain.

Deterministic for a given numpy Generator, so rendered datasets are byte-identical per seed.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from edgemir.labels import SAMPLE_RATE


def room_ir(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """A synthetic room impulse response: direct path + exponentially decaying filtered noise."""
    n = max(int(rt60 * SAMPLE_RATE), 64)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    b, a = signal.butter(1, rng.uniform(2000, 7000) / (SAMPLE_RATE / 2))
    tail = signal.lfilter(b, a, tail)
    pre = int(rng.uniform(0.003, 0.02) * SAMPLE_RATE)
    ir = np.concatenate([[1.0], np.zeros(pre), tail * rng.uniform(0.05, 0.3)])
    return ir / np.sqrt(np.sum(ir**2))


def random_eq(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """A gentle random tilt: low and high shelves of ±9 dB (a cheap mic/speaker colour)."""
    for kind, lo, hi in (("low", 100, 400), ("high", 2000, 6000)):
        g = 10 ** (rng.uniform(-9, 9) / 20)
        fc = rng.uniform(lo, hi) / (SAMPLE_RATE / 2)
        b, a = signal.butter(1, fc, btype="lowpass" if kind == "low" else "highpass")
        x = x + (g - 1) * signal.lfilter(b, a, x)
    return x


def coloured_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """White, pink or brown noise (1/f^alpha), unit RMS."""
    alpha = rng.choice([0.0, 1.0, 2.0])
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    f[0] = f[1]
    spec /= f ** (alpha / 2)
    y = np.fft.irfft(spec, n)
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def realism(rng: np.random.Generator, x: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Reverb (p=.6), EQ (p=.7), noise at 10–40 dB SNR (p=.6), then a random peak level."""
    x = x.astype(np.float64)
    if rng.random() < 0.6 * strength:
        ir = room_ir(rng, rng.uniform(0.15, 1.2))
        wet = signal.fftconvolve(x, ir)[: len(x)]
        mix = rng.uniform(0.1, 0.6)
        x = (1 - mix) * x + mix * wet
    if rng.random() < 0.7 * strength:
        x = random_eq(rng, x)
    rms = np.sqrt(np.mean(x**2)) + 1e-9
    if rng.random() < 0.6 * strength:
        snr = rng.uniform(10, 40)
        x = x + coloured_noise(rng, len(x)) * rms * 10 ** (-snr / 20)
    peak = np.max(np.abs(x)) + 1e-9
    return (x / peak * 10 ** (rng.uniform(-24, -1) / 20)).astype(np.float32)
