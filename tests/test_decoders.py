"""Decoders recover known events from synthetic activations, in blocks of any size."""

from __future__ import annotations

import numpy as np

from edgemir.decoders import ChordDecoder, DrumDecoder, InstrumentDecoder, OnsetDecoder, PitchDecoder
from edgemir.labels import CHORDS, FAMILIES, PITCH_BINS, PITCH_FMIN
from edgemir.refine import coarse_cents


def _blocks(dec, probs, sizes=(1, 3, 7)):
    out, i, k = [], 0, 0
    lv = np.zeros(probs.shape[1])
    while i < probs.shape[1]:
        n = sizes[k % len(sizes)]
        out += dec.push(probs[:, i:i + n], i, lv[i:i + n])
        i += n
        k += 1
    return out + dec.finish()


def test_onset_peaks_with_threshold_and_min_gap():
    a = np.zeros((1, 300), np.float32)
    for t in (20, 100, 102, 200):
        a[0, t - 1: t + 2] = [0.6, 0.9, 0.6]
    a[0, 250] = 0.3  # below threshold
    ev = _blocks(OnsetDecoder(threshold=0.5, min_gap=3), a)
    assert [round(e.t * 100) for e in ev] == [20, 100, 200]


def test_onset_decides_within_the_frame_at_window_0():
    """Window 0 (the live design) fires on the frame where the activation rises through the threshold, with no
    frames of delay; a plateau is one event, a dip and rise after the minimum gap another, in any block sizes."""
    a = np.zeros((1, 300), np.float32)
    for t in (20, 100, 200):
        a[0, t: t + 4] = [0.6, 0.9, 0.7, 0.55]
    a[0, 104] = 0.4  # dips below ...
    a[0, 105] = 0.8  # ... and rises again 5 frames after 100: a second event
    a[0, 150] = 0.3
    for sizes in ((1,), (1, 3, 7), (300,)):
        dec = OnsetDecoder(threshold=0.5, min_gap=3, window=0)
        assert dec.delay_frames == 0
        ev = _blocks(dec, a, sizes)
        assert [round(e.t * 100) for e in ev] == [20, 100, 105, 200]
        assert all(e.frame == round(e.t * 100) for e in ev)  # decided at the frame itself


def test_drums_per_class():
    a = np.zeros((3, 200), np.float32)
    a[0, 50] = a[1, 80] = a[2, 50] = a[2, 120] = 0.9
    ev = _blocks(DrumDecoder(), a)
    assert sorted((round(e.t * 100), e.value) for e in ev) == [(50, "hihat"), (50, "kick"), (80, "snare"), (120, "hihat")]


def test_pitch_weighted_average_and_voicing():
    T = 10
    p = np.zeros((PITCH_BINS + 1, T), np.float32)
    target_cents = 2450.0  # between bins 122 and 123
    c = np.arange(PITCH_BINS) * 20.0
    p[:PITCH_BINS] = np.exp(-((c[:, None] - target_cents) ** 2) / (2 * 25**2))
    p[PITCH_BINS, :5] = 0.9
    p[PITCH_BINS, 5:] = 0.1
    p[PITCH_BINS, 7:] = 0.4
    steady = (np.arange(T) >= 8).astype(np.float32)  # the refiner found the last two frames steady
    p = np.concatenate([p, coarse_cents(p[:PITCH_BINS])[None, :], steady[None, :]])  # the rows the refiner appends
    ev = _blocks(PitchDecoder(threshold=0.5), p)
    f = PITCH_FMIN * 2 ** (target_cents / 1200)
    assert len(ev) == T
    assert all(abs(e.value - f) / f < 0.002 for e in ev[:5])
    assert all(e.value < 0 and abs(-e.value - f) / f < 0.002 for e in ev[5:])
    # with a lower threshold for steady frames, only the steady frames over it are voiced
    ev = _blocks(PitchDecoder(threshold=0.5, steady=0.3), p)
    assert [e.value > 0 for e in ev] == [True] * 5 + [False] * 3 + [True] * 2


def test_chord_smoothing_ignores_blips():
    T = 400
    p = np.full((len(CHORDS), T), 0.01, np.float32)
    c, g = CHORDS.index("C:maj"), CHORDS.index("G:maj")
    p[c, :200] = 0.8
    p[g, 200:] = 0.8
    p[:, 100:103] = 0.01
    p[CHORDS.index("A:min"), 100:103] = 0.9  # a 30 ms blip
    ev = _blocks(ChordDecoder(stay=0.99), p)
    assert [e.value for e in ev] == ["C:maj", "G:maj"]
    assert abs(ev[1].t - 2.0) < 0.05


def test_instrument_average():
    T = 400
    p = np.full((len(FAMILIES), T), 0.05, np.float32)
    p[FAMILIES.index("brass")] = 0.5
    p[FAMILIES.index("reed"), :50] = 0.9
    dec = InstrumentDecoder()
    ev = _blocks(dec, p)
    assert ev and ev[-1].value == "brass"
    whole, windows = dec.summary()
    assert whole == "brass" and len(windows) == 1


def test_phase_refinement_reads_a_steady_tone_to_a_fraction_of_a_cent():
    """The pitch refiner's phase vocoder, on two frames of a harmonic tone between bins, from a coarse guess
    18 cents off: within 0.1 cent, or 2 cents below 62.5 Hz where partials 4 bins apart overlap; a guess
    40 cents off is refused (the model's estimate stays)."""
    import torch

    from edgemir.frontend import complex_spectrum
    from edgemir.labels import HOP, SAMPLE_RATE
    from edgemir.refine import phase_f0

    for f in (41.2, 82.41, 441.3, 2093.0):
        t = np.arange(1024 + HOP) / SAMPLE_RATE
        x = sum(np.sin(2 * np.pi * k * f * t + k) / k for k in range(1, int(7000 / f) + 1)).astype(np.float32)
        s = complex_spectrum(torch.from_numpy(x).unfold(0, 1024, HOP)).numpy()
        got = phase_f0(s[0], s[1], f * 2 ** (18 / 1200), max_cents=20)
        assert got is not None and abs(1200 * np.log2(got / f)) < (2.0 if f < 62.5 else 0.1), (f, got)
        assert phase_f0(s[0], s[1], f * 2 ** (40 / 1200), max_cents=20) is None


def test_phase_refinement_finds_a_low_lone_partial_the_model_places_bins_away():
    """A pure sine below 200 Hz: the model's salience reads it at an STFT bin's centre (up to 560 cents off);
    with the spread of the refiner (2 bins) the phase vocoder reads the sine itself within 0.1 cent (2 cents
    below 100 Hz, where the window holds under 7 periods and the sine's mirror image moves one frame pair's
    reading by up to a cent; the tuner takes a note's median);
    without it the guess is refused. The guess a semitone off above 200 Hz behaves as before."""
    import torch

    from edgemir.frontend import complex_spectrum
    from edgemir.labels import HOP, SAMPLE_RATE
    from edgemir.refine import PitchRefiner, phase_f0s

    spread = PitchRefiner(0).spread_hz
    # (an E2 sine 592 cents low, 1.52 bins: where a trimmed net's estimate fell, out of the 1.5 bins searched before)
    for f, off_cents in ((41.2, 254.0), (69.3, -559.0), (73.4, -389.0), (146.8, -199.0), (82.41, -592.0)):
        t = np.arange(1024 + HOP) / SAMPLE_RATE
        s = complex_spectrum(torch.from_numpy(np.sin(2 * np.pi * f * t).astype(np.float32)).unfold(0, 1024, HOP)).numpy()
        guess = np.array([f * 2 ** (off_cents / 1200)])
        got = phase_f0s(s[:1], s[1:], guess, 100.0, spread)[0]
        assert abs(1200 * np.log2(got / f)) < (2.0 if f < 100 else 0.1), (f, got)
        assert np.isnan(phase_f0s(s[:1], s[1:], guess, 100.0)[0])


def test_subharmonic_check_finds_a_weak_fundamental_under_the_models_harmonic():
    """A low plucked string with a weak fundamental that the model reads at its 3rd or 4th harmonic: the
    refiner's check finds the partials between that harmonic's own and divides by 3 or 4; read at its 2nd it
    stays (2:1 is left alone: rough voices have it too); a full harmonic tone and a pure sine at the model's
    estimate stay where they are (the in-between positions are empty)."""
    import torch

    from edgemir.frontend import complex_spectrum
    from edgemir.labels import HOP, SAMPLE_RATE
    from edgemir.refine import subharmonic

    t = np.arange(1024 + HOP) / SAMPLE_RATE

    def pair(f0, first_gain=1.0, harmonics=True):
        ks = range(1, int(7000 / f0) + 1) if harmonics else (1,)
        x = sum((first_gain if k == 1 else 1.0) * np.sin(2 * np.pi * k * f0 * t + k) / k for k in ks)
        s = complex_spectrum(torch.from_numpy(x.astype(np.float32)).unfold(0, 1024, HOP)).numpy()
        return s[:1], s[1:]

    for f0 in (43.65, 65.41, 98.0):
        x1, x2 = pair(f0, first_gain=0.05)  # the fundamental 26 dB under its usual level
        for m in (3, 4):
            assert subharmonic(x1, x2, np.array([m * f0]), 38.0)[0] == m, (f0, m)
        assert subharmonic(x1, x2, np.array([2 * f0]), 38.0)[0] == 1
    for f0 in (82.41, 196.0, 440.0):
        for harmonics in (True, False):
            x1, x2 = pair(f0, harmonics=harmonics)
            assert subharmonic(x1, x2, np.array([f0]), 38.0)[0] == 1, (f0, harmonics)
