"""Sound sources that General MIDI banks lack, synthesised with exact labels: a singing voice, plucked
strings, pure sines and plain harmonic tones, and the amplifiers and effects that real recordings
go through (pedalboard).

Each source returns audio at 16 kHz and, for pitched ones, the f0 it sounded (Hz, 0 = unvoiced) on
the project's 10-ms frame grid, so pitch labels are exact by construction. Deterministic for a given
numpy Generator.

The voice here is a small additive source-filter model: a glottal harmonic series with spectral
tilt, jitter and breath noise, shaped by vowel formants that move from syllable to syllable, with
consonants (unvoiced noise, voiced nasals) between notes. Models trained on it alone learn its
timbre, not a voice's: generator 6 also sings with recorded voices (train/speech.py: Festival's
voices resynthesised with WORLD at the melody's f0).
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from edgemir.labels import SAMPLE_RATE

SR = SAMPLE_RATE
HOP_S = 0.01
CTRL = 80  # control-rate step in samples (5 ms): f0 and amplitudes are interpolated between steps

# (F1, F2, F3, F4) in Hz for a male voice (Peterson & Barney style averages); female voices scale up
VOWELS = {
    "a": (730, 1090, 2440, 3400), "e": (530, 1840, 2480, 3500), "i": (270, 2290, 3010, 3700),
    "o": (570, 840, 2410, 3300), "u": (300, 870, 2240, 3300), "ae": (660, 1720, 2410, 3400),
    "er": (490, 1350, 1690, 3300),
}
SINGER_RANGES = {"male": (40, 67), "female": (53, 81)}  # MIDI: E2-G4, F3-A5


def midi_hz(m):
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


def _frames(dur: float) -> np.ndarray:
    return np.arange(int(round(dur / HOP_S))) * HOP_S


def _labels(f0_ctrl: np.ndarray, voiced_ctrl: np.ndarray, dur: float) -> np.ndarray:
    """The f0 of each 10-ms frame from control-rate curves (0 where unvoiced)."""
    t = _frames(dur)
    k = np.minimum((t * SR / CTRL).round().astype(int), len(f0_ctrl) - 1)
    return np.where(voiced_ctrl[k], f0_ctrl[k], 0.0)


def _additive(f0_ctrl: np.ndarray, amps_ctrl: np.ndarray, n: int, rng, ratios: np.ndarray | None = None) -> np.ndarray:
    """Sum of partials k*f0 (or ratios[k]*f0) with control-rate amplitudes [K, C] -> n samples."""
    tc = np.arange(len(f0_ctrl)) * CTRL
    ts = np.arange(n)
    f0 = np.interp(ts, tc, f0_ctrl)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    out = np.zeros(n)
    for k in range(amps_ctrl.shape[0]):
        a = np.interp(ts, tc, amps_ctrl[k])
        if not a.any():
            continue
        r = (k + 1) if ratios is None else ratios[k]
        out += a * np.sin(r * phase + rng.uniform(0, 2 * np.pi))
    return out


def _formant_gain(freqs: np.ndarray, formants: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Magnitude of a cascade-like vowel envelope at ``freqs`` [K, C] for formants [4, C]."""
    g = np.full(freqs.shape, 0.02)
    for i in range(formants.shape[0]):
        g = g + (1.0, 0.7, 0.45, 0.3)[i] / (1.0 + ((freqs - formants[i]) / (bw[i] / 2)) ** 2)
    return g


def sung_cents(rng: np.random.Generator, m: float, tt: np.ndarray, legato_from: float | None, vib_rate: float,
               vib_depth: float) -> np.ndarray:
    """A sung note's pitch (cents re A4) at times ``tt`` into it: from ``legato_from`` (the previous note, when
    legato) often a portamento, else sometimes a scoop up into the note; vibrato after a delay."""
    c = np.full(len(tt), 100.0 * (m - 69))
    if legato_from is not None and rng.random() < 0.7:  # portamento from the previous note
        g = rng.uniform(0.03, 0.15)
        c += np.where(tt < g, (legato_from - m) * 100 * (1 - tt / g), 0.0)
    elif rng.random() < 0.4:  # scoop up into the note
        g, depth = rng.uniform(0.04, 0.12), rng.uniform(30, 150)
        c -= np.where(tt < g, depth * (1 - tt / g), 0.0)
    ramp = np.clip((tt - rng.uniform(0.1, 0.4)) / 0.2, 0, 1)
    return c + vib_depth * ramp * np.sin(2 * np.pi * vib_rate * tt + rng.uniform(0, 2 * np.pi))


def sing(rng: np.random.Generator, notes: list[tuple[float, float, float]], dur: float,
         sex: str | None = None) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """A sung line: notes (midi, start, end) -> (audio, f0 per 10-ms frame, onset times).

    Vibrato (4.5-7.5 Hz, up to ±100 cents, delayed), scoops into notes, portamento between legato notes,
    slow drift, a syllable per note (a vowel, often after a consonant), breath noise."""
    sex = sex or str(rng.choice(["male", "female"]))
    n = int(round(dur * SR))
    nc = n // CTRL + 2
    tc = np.arange(nc) * CTRL / SR
    cents = np.full(nc, np.nan)
    amp = np.zeros(nc)
    noise_amp = np.zeros(nc)  # unvoiced consonants
    vowel_f = np.zeros((4, nc))
    scale = rng.uniform(1.12, 1.25) if sex == "female" else rng.uniform(0.92, 1.05)
    vib_rate, vib_depth = rng.uniform(4.5, 7.5), rng.choice([0.0, rng.uniform(10, 40), rng.uniform(40, 100)])
    notes = sorted(notes, key=lambda x: x[1])
    prev_end, prev_pitch = -1.0, None
    names = list(VOWELS)
    onsets: list[float] = []
    for m, a, b in notes:
        ka, kb = int(a * SR / CTRL), min(int(b * SR / CTRL), nc)
        if kb - ka < 4:
            continue
        tt = tc[ka:kb] - a
        legato = prev_pitch is not None and a - prev_end < 0.06
        c = sung_cents(rng, m, tt, prev_pitch if legato else None, vib_rate, vib_depth)
        cents[ka:kb] = c
        att, rel = rng.uniform(0.02, 0.08), rng.uniform(0.03, 0.1)
        env = np.minimum(1.0, tt / att) * np.clip((b - a - tt) / rel, 0, 1)
        amp[ka:kb] = env * 10 ** (rng.uniform(-6, 0) / 20)
        v = np.array(VOWELS[names[rng.integers(len(names))]], dtype=float) * scale
        vowel_f[:, ka:kb] = v[:, None]
        onsets.append(a)
        if not legato and rng.random() < 0.6:  # a consonant before the vowel
            kind = rng.choice(["fricative", "plosive", "nasal"], p=[0.45, 0.35, 0.2])
            ln = {"fricative": rng.uniform(0.04, 0.12), "plosive": rng.uniform(0.01, 0.03),
                  "nasal": rng.uniform(0.04, 0.1)}[kind]
            k0 = max(0, ka - int(ln * SR / CTRL))
            if kind == "nasal":  # voiced: the pitch starts early with a low, dark formant
                cents[k0:ka] = c[0]
                amp[k0:ka] = 0.3 * amp[ka:kb].max()
                vowel_f[:, k0:ka] = (np.array([250, 1000, 2300, 3300]) * scale)[:, None]
            else:
                noise_amp[k0:ka] = rng.uniform(0.05, 0.3) * (1.0 if kind == "fricative" else 2.0)
            onsets[-1] = k0 * CTRL / SR  # the syllable starts with its consonant
        prev_end, prev_pitch = b, m
    # fill formants through gaps so interpolation stays finite
    for i in range(4):
        row = vowel_f[i]
        idx = np.flatnonzero(row)
        vowel_f[i] = np.interp(np.arange(nc), idx, row[idx]) if len(idx) else VOWELS["a"][i]
    # smooth formant moves (coarticulation) and slow pitch drift
    vowel_f = signal.filtfilt(*signal.butter(1, 0.1), vowel_f, axis=1)
    voiced = ~np.isnan(cents) & (amp > 1e-3)
    drift = np.cumsum(rng.normal(0, 0.8, nc))
    drift = signal.filtfilt(*signal.butter(1, 0.02), drift - drift.mean())
    cents_f = np.where(np.isnan(cents), np.interp(np.arange(nc), np.flatnonzero(~np.isnan(cents)),
                                                   cents[~np.isnan(cents)]) if voiced.any() else 0.0, cents)
    cents_f = cents_f + np.clip(drift, -15, 15)
    f0 = 440.0 * 2 ** (cents_f / 1200)
    K = int(7800 / max(f0.min(), 40.0))
    k = np.arange(1, K + 1)[:, None]
    freqs = k * f0[None, :]
    tilt = k.astype(float) ** -rng.uniform(1.0, 1.8)
    bw = np.array([80, 100, 150, 200]) * rng.uniform(0.8, 1.5)
    amps = tilt * _formant_gain(freqs, vowel_f, bw) * np.where(voiced, amp, 0.0)[None, :]
    amps[freqs >= 7800] = 0.0
    shimmer = 1 + 0.05 * signal.lfilter([0.2], [1, -0.8], rng.standard_normal(nc))
    voice = _additive(f0, amps * shimmer[None, :], n, rng)
    voice /= np.abs(voice).max() + 1e-9
    # breath noise: noise shaped by the voice's own amplitude, and consonants
    ts = np.arange(n)
    breath_env = np.interp(ts, tc * SR, np.where(voiced, amp, 0.0)) * rng.uniform(0.003, 0.04)
    hiss = signal.lfilter(*signal.butter(2, [1500 / (SR / 2), 7000 / (SR / 2)], btype="band"), rng.standard_normal(n))
    cons = np.interp(ts, tc * SR, noise_amp) * signal.lfilter(*signal.butter(2, 2500 / (SR / 2), btype="high"),
                                                               rng.standard_normal(n))
    out = voice + breath_env * hiss + cons
    out = out / (np.abs(out).max() + 1e-9) * 0.5
    # frame labels: voiced where the voice is above -30 dB of its peak
    lab_voiced = voiced & (amp > 0.03 * amp.max())
    return out.astype(np.float32), _labels(f0, lab_voiced, dur), onsets


def pluck(rng: np.random.Generator, notes: list[tuple[float, float, float]], dur: float,
          bright: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Plucked strings (additive: harmonics with pluck-position weights, frequency-dependent decay and
    slight stiffness), one note at a time, damped at each note's end. Labels are the fundamental's
    frequency while the note sounds above -35 dB of its start."""
    n = int(round(dur * SR))
    out = np.zeros(n)
    f0_lab = np.zeros(len(_frames(dur)))
    for m, a, b in notes:
        f0 = float(midi_hz(m))
        B = rng.uniform(0, 1.5e-4) if m > 45 else rng.uniform(0, 4e-4)
        K = max(1, int(7800 / f0))
        k = np.arange(1, K + 1)
        ratios = k * np.sqrt(1 + B * k**2)
        k = k[ratios * f0 < 7800]
        ratios = ratios[: len(k)]
        pos = rng.uniform(0.08, 0.3)
        w = np.abs(np.sin(np.pi * k * pos)) / k ** (bright if bright is not None else rng.uniform(0.8, 1.6))
        tau1 = rng.uniform(0.6, 3.0) * (1.5 if m < 45 else 1.0)
        taus = tau1 / (1 + rng.uniform(0.05, 0.4) * (k - 1))
        i0 = int(a * SR)
        ln = min(n, int((b + 0.05) * SR)) - i0
        if ln <= 0:
            continue
        t = np.arange(ln) / SR
        damp = np.clip(1 - (t - (b - a)) / 0.05, 0, 1)
        ph = rng.uniform(0, 2 * np.pi, len(k))
        partials = np.sin(2 * np.pi * f0 * ratios[:, None] * t[None, :] + ph[:, None])
        x = (w[:, None] * np.exp(-t[None, :] / taus[:, None]) * partials).sum(0)
        click = rng.standard_normal(min(ln, 80)) * np.exp(-np.arange(min(ln, 80)) / 15) * 0.3 * w.sum()
        x[: len(click)] += click
        x *= damp * 10 ** (rng.uniform(-8, 0) / 20)
        out[i0:i0 + ln] += x
        # voiced while the fundamental's envelope (the note's level) is above -35 dB
        audible = a + min(b - a, tau1 * np.log(10 ** (35 / 20)))
        fr = _frames(dur)
        f0_lab[(fr >= a) & (fr < audible)] = f0 * ratios[0]
    out = out / (np.abs(out).max() + 1e-9) * 0.5
    return out.astype(np.float32), f0_lab


def tone(rng: np.random.Generator, notes: list[tuple[float, float, float]], dur: float,
         pure: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Steady tones: pure sines (``pure``) or harmonic tones with a random spectrum, with optional vibrato
    and glides; labels are exact."""
    n = int(round(dur * SR))
    nc = n // CTRL + 2
    tc = np.arange(nc) * CTRL / SR
    cents = np.full(nc, np.nan)
    amp = np.zeros(nc)
    for m, a, b in notes:
        ka, kb = int(a * SR / CTRL), min(int(b * SR / CTRL), nc)
        if kb - ka < 4:
            continue
        tt = tc[ka:kb] - a
        c = np.full(kb - ka, 100.0 * (m - 69))
        if rng.random() < 0.3:
            c += rng.uniform(5, 50) * np.sin(2 * np.pi * rng.uniform(4, 7) * tt)
        att, rel = rng.uniform(0.005, 0.1), rng.uniform(0.01, 0.1)
        cents[ka:kb] = c
        amp[ka:kb] = np.minimum(1.0, tt / att) * np.clip((b - a - tt) / rel, 0, 1) * 10 ** (rng.uniform(-10, 0) / 20)
    voiced = ~np.isnan(cents) & (amp > 0.03 * max(amp.max(), 1e-9))
    if not (~np.isnan(cents)).any():
        return np.zeros(n, np.float32), np.zeros(len(_frames(dur)))
    ok = ~np.isnan(cents)
    cents = np.interp(np.arange(nc), np.flatnonzero(ok), cents[ok])
    f0 = 440.0 * 2 ** (cents / 1200)
    if pure:
        amps = amp[None, :]
    else:
        K = int(7800 / max(f0.min(), 40.0))
        k = np.arange(1, K + 1)[:, None].astype(float)
        w = k ** -rng.uniform(0.5, 2.0) * (rng.uniform(0.2, 1.0, (K, 1)) if rng.random() < 0.5 else 1.0)
        if rng.random() < 0.25:  # odd harmonics only (clarinet/square-like)
            w[1::2] *= 0.05
        amps = w * amp[None, :]
        amps[k * f0[None, :] >= 7800] = 0.0
    out = _additive(f0, amps, n, rng)
    out = out / (np.abs(out).max() + 1e-9) * 0.5
    return out.astype(np.float32), _labels(f0, voiced, dur)


# -- amplifiers and effects (pedalboard) -------------------------------------------------------
def amp_chain(rng: np.random.Generator, x: np.ndarray, drive: bool | None = None) -> np.ndarray:
    """An electric guitar or bass rig: optional compressor, overdrive/distortion/fuzz, cabinet
    filtering, modulation (chorus/phaser), delay and reverb."""
    import pedalboard as pb

    fx = []
    if rng.random() < 0.5:
        fx.append(pb.Compressor(threshold_db=float(rng.uniform(-30, -10)), ratio=float(rng.uniform(2, 8))))
    drive = rng.random() < 0.6 if drive is None else drive
    if drive:
        kind = rng.choice(["overdrive", "distortion", "fuzz"])
        if kind == "fuzz":
            fx += [pb.Gain(float(rng.uniform(15, 35))), pb.Clipping(threshold_db=float(rng.uniform(-12, -3)))]
        else:
            fx.append(pb.Distortion(drive_db=float(rng.uniform(8, 20) if kind == "overdrive" else rng.uniform(20, 40))))
        fx += [pb.HighpassFilter(float(rng.uniform(60, 150))), pb.LowpassFilter(float(rng.uniform(2500, 6000))),
               pb.PeakFilter(float(rng.uniform(400, 2500)), float(rng.uniform(-6, 8)), float(rng.uniform(0.5, 2)))]
    r = rng.random()
    if r < 0.2:
        fx.append(pb.Chorus(rate_hz=float(rng.uniform(0.3, 2)), depth=float(rng.uniform(0.1, 0.4)),
                            mix=float(rng.uniform(0.2, 0.5))))
    elif r < 0.3:
        fx.append(pb.Phaser(rate_hz=float(rng.uniform(0.2, 2)), mix=float(rng.uniform(0.2, 0.5))))
    return _space_and_play(rng, fx, x, (0.2, (0.08, 0.4), (0.1, 0.4), (0.1, 0.3)), (0.3, (0.1, 0.7), (0.05, 0.3)))


def vocal_chain(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """A vocal production chain: high-pass, EQ, compression, sometimes delay, often reverb."""
    import pedalboard as pb

    fx = [pb.HighpassFilter(float(rng.uniform(60, 140))),
          pb.PeakFilter(float(rng.uniform(1500, 5000)), float(rng.uniform(-3, 6)), 1.0)]
    if rng.random() < 0.7:
        fx.append(pb.Compressor(threshold_db=float(rng.uniform(-30, -12)), ratio=float(rng.uniform(2, 6))))
    return _space_and_play(rng, fx, x, (0.2, (0.1, 0.35), (0.1, 0.3), (0.05, 0.2)), (0.5, (0.2, 0.8), (0.05, 0.25)))


def _space_and_play(rng: np.random.Generator, fx: list, x: np.ndarray, delay: tuple, reverb: tuple) -> np.ndarray:
    """Append a delay (p, seconds, feedback, mix ranges) and a reverb (p, room, wet ranges) to a chain, each with
    its probability, run it and normalise to a 0.5 peak."""
    import pedalboard as pb

    p, sec, fb, mix = delay
    if rng.random() < p:
        fx.append(pb.Delay(delay_seconds=float(rng.uniform(*sec)), feedback=float(rng.uniform(*fb)),
                           mix=float(rng.uniform(*mix))))
    p, room, wet = reverb
    if rng.random() < p:
        fx.append(pb.Reverb(room_size=float(rng.uniform(*room)), wet_level=float(rng.uniform(*wet)), dry_level=1.0))
    y = pb.Pedalboard(fx)(x.astype(np.float32)[None, :], SR)[0]
    return (y / (np.abs(y).max() + 1e-9) * 0.5).astype(np.float32)


def bus(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Mix-bus processing of a full band: compression and a limiter that may clip a little."""
    import pedalboard as pb

    fx = [pb.Compressor(threshold_db=float(rng.uniform(-24, -8)), ratio=float(rng.uniform(2, 6)))]
    if rng.random() < 0.5:
        fx += [pb.Gain(float(rng.uniform(0, 8))), pb.Limiter(threshold_db=float(rng.uniform(-6, -0.5)))]
    y = pb.Pedalboard(fx)(x.astype(np.float32)[None, :], SR)[0]
    return (y / (np.abs(y).max() + 1e-9) * 0.5).astype(np.float32)
