"""Labelled audio for the five tasks, rendered from generated scores with real SoundFont samples.

Each generator returns (audio, annotation); ``write_dataset`` renders a split to a folder in the
project's annotation formats with a manifest. Deterministic for a given seed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from edgemir.errors import UserError
from edgemir.labels import FAMILIES, PITCH_CLASSES, SAMPLE_RATE, TASKS, family_of_program
from edgemir.tasks import REGISTRY
from train import annotations as ann
from train import sources as src
from train import speech
from train.augment import realism
from train.kits import hydrogen_kits
from train.render import (
    BEND_RANGE,
    DRUM_CHANNEL,
    Renderer,
    Score,
    bend_value,
    default_soundfont,
    extra_drum_kits,
    gm_soundfonts,
)

GENERATOR_VERSION = "6"  # 3: synthesised singers, plucks, tones, amps/effects and full-band drum mixes (train/sources.py);
# 4: drums only: a quarter of the items drum-free (voice, guitar, GM melody, or a whole band without drums), was 8%
# 5: instrument only: players' expression on GM lines (vibrato, bends, swells) and strummed guitar chords
# 6: half the synthesised singers are recorded voices resynthesised at the melody's f0 (train/speech.py)
# 2: train/valid items draw their GM bank from a pool; no detuned pitch programs (`train data --generator 2`)
SPLITS = ("train", "valid", "test")
HOP_S = 0.01

# (programs, lowest MIDI note, highest MIDI note) per NSynth family; the programs are labels.family_of_program's
FAMILY_RANGES: dict[str, tuple[int, int]] = {
    "bass": (28, 55), "brass": (40, 82), "flute": (60, 93), "guitar": (40, 81), "keyboard": (33, 93), "mallet": (53, 93),
    "organ": (36, 88), "reed": (40, 86), "string": (36, 91), "synth_lead": (36, 91), "vocal": (45, 79),
}
FAMILY_PROGRAMS: dict[str, tuple[list[int], int, int]] = {
    fam: ([p for p in range(128) if family_of_program(p) == fam], lo, hi) for fam, (lo, hi) in FAMILY_RANGES.items()
}
# Monophonic pitch: the "melodic" families (and their ranges), f0 from 51.9 Hz (MIDI 32) up.
PITCH_FAMILIES = ("vocal", "reed", "flute", "brass", "string", "guitar", "bass", "synth_lead")
# Programs whose sounding pitch is not the note's (measured with pyin on every bank we use): guitar
# harmonics (31) sounds two octaves up, lead 7 "fifths" (86) doubles a fifth, TimGM6mb's whistle (78)
# is 9 semitones flat. They would be wrong f0 labels, so the pitch task never plays them.
PITCH_EXCLUDED = (31, 78, 86)
KICKS, SNARES, HIHATS = (35, 36), (38, 40), (42, 44, 46)
DISTRACTORS = (41, 43, 45, 47, 48, 50, 49, 57, 51, 59, 52, 55, 39, 54, 56, 37)
GM_KITS = (0, 8, 16, 24, 25, 32, 40, 48)


def midi_hz(m: float) -> float:
    return 440.0 * 2 ** ((m - 69) / 12)


def _program(rng, family: str, exclude: tuple[int, ...] = ()) -> tuple[int, int, int]:
    progs, lo, hi = FAMILY_PROGRAMS[family]
    return int(rng.choice([p for p in progs if p not in exclude])), lo, hi


def _melody(rng, lo: int, hi: int, t0: float, t1: float, tempo: float):
    """A monophonic line: (pitch, start, end) with rests, steps and leaps, inside [lo, hi]."""
    beat = 60.0 / tempo
    notes = []
    t = t0
    p = int(rng.integers(lo, hi + 1))
    while t < t1 - 0.1:
        dur = beat * rng.choice([0.25, 0.5, 0.5, 1, 1, 1.5, 2, 3])
        if rng.random() < 0.15:
            t += beat * rng.choice([0.5, 1, 2])
            continue
        step = int(rng.choice([-7, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 7, 12, -12]))
        p = int(np.clip(p + step, lo, hi))
        art = rng.uniform(0.6, 1.0)
        notes.append((p, t, min(t + dur * art, t1)))
        t += dur
    return notes



@dataclass
class Part:
    """One track of a mix: a Score rendered from the banks, or synthesised audio; optional effects."""

    score: Score | None = None
    audio: np.ndarray | None = None
    fx: Callable[[np.ndarray], np.ndarray] | None = None
    gain_db: float = 0.0


@dataclass
class Mix:
    """Tracks rendered separately (so each gets its own effects), summed, optionally bus-processed."""

    parts: list[Part] = field(default_factory=list)
    bus: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def programs(self) -> dict:
        out = {}
        for k, p in enumerate(self.parts):
            if p.score is not None:
                out.update({(k, c): v for c, v in p.score.programs.items()})
        return out

    def use_bank(self, bank: int, n_gm: int) -> None:
        for p in self.parts:
            if p.score is not None:
                p.score.use_bank(bank, n_gm)

    def render(self, renderer: Renderer, dur: float) -> np.ndarray:
        n = int(round(dur * SAMPLE_RATE))
        out = np.zeros(n, np.float32)
        for p in self.parts:
            x = renderer.render(p.score, dur) if p.score is not None else p.audio[:n]
            if p.fx is not None and np.abs(x).max() > 0:
                x = p.fx(x)
            x = x / (np.abs(x).max() + 1e-9) * 0.5 * 10 ** (p.gain_db / 20)
            out[: len(x)] += x
        return self.bus(out) if self.bus is not None else out


def render_item(renderer: Renderer, item, dur: float) -> np.ndarray:
    return item.render(renderer, dur) if isinstance(item, Mix) else renderer.render(item, dur)


def _score_of(chan_prog: int, notes, rng, vel=(40, 127)) -> Score:
    sc = Score()
    sc.program(0, chan_prog)
    for p, a, b in notes:
        sc.note(0, p, a, b, int(rng.integers(*vel)))
    return sc


def _sustained(rng, lo: int, hi: int, t0: float, t1: float):
    """Long steady notes (a tuner's material): 0.5-2.5 s each with short gaps."""
    notes, t = [], t0
    while t < t1 - 0.5:
        d = min(rng.uniform(0.5, 2.5), t1 - t)
        notes.append((int(rng.integers(lo, hi + 1)), t, t + d))
        t += d + rng.uniform(0.05, 0.5)
    return notes

def _sing(rng, notes, dur: float, sex: str, version: int, split: str) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """A sung line: from version 6 half the time a recorded voice sung at the melody (train/speech.py; test splits
    sing their own lyric lines), else the source-filter singer (train/sources.py)."""
    if version >= 6 and rng.random() < 0.5:
        return speech.sing(rng, notes, dur, sex, test=split == "test")
    return src.sing(rng, notes, dur, sex)


# -- pitch ---------------------------------------------------------------------------------
def gen_pitch(rng, kits: int = 0, version: int = 3, split: str = "train"):
    """Monophonic melodies with exact f0 labels; version 3 adds singers, plucks, tones and sines."""
    if version >= 3:
        return gen_pitch_v3(rng, version, split)
    return gen_pitch_gm(rng)


def gen_pitch_gm(rng, lo_hi: tuple[int, int] = (32, 91), fx: bool = False) -> tuple[Score, float, dict]:
    dur = 8.0
    fam = PITCH_FAMILIES[rng.integers(len(PITCH_FAMILIES))]
    prog, lo, hi = _program(rng, fam, exclude=PITCH_EXCLUDED)
    lo, hi = max(lo, lo_hi[0]), min(hi, lo_hi[1])
    sc = Score()
    sc.program(0, prog)
    notes = _melody(rng, lo, hi, rng.uniform(0.1, 0.6), dur - 0.3, rng.uniform(60, 160))
    n_frames = int(dur / HOP_S)
    f0 = np.zeros(n_frames)
    times = np.arange(n_frames) * HOP_S
    for p, a, b in notes:
        vel = int(rng.integers(40, 127))
        sc.note(0, p, a, b, vel)
        # per-note pitch-bend curve, sampled every 10 ms: scoop/fall glide and/or vibrato
        tt = np.arange(a, b, HOP_S)
        cents = np.zeros_like(tt)
        if rng.random() < 0.3:  # glide into the note from up to ±BEND_RANGE semitones
            g = rng.uniform(-BEND_RANGE, BEND_RANGE) * 100
            gl = rng.uniform(0.05, 0.25)
            cents += np.where(tt - a < gl, g * (1 - (tt - a) / gl), 0.0)
        if rng.random() < 0.5:  # vibrato
            rate, depth, delay = rng.uniform(4, 7), rng.uniform(10, 60), rng.uniform(0.0, 0.3)
            cents += np.where(tt - a > delay, depth * np.sin(2 * np.pi * rate * (tt - a - delay)), 0.0)
        vals = [bend_value(c / 100) for c in cents]
        for t, v in zip(tt, vals):
            sc.add(t, "bend", 0, v)
        k0, k1 = int(np.ceil(a / HOP_S - 1e-9)), int(np.ceil(b / HOP_S - 1e-9))
        for k in range(k0, min(k1, n_frames)):
            j = min(int((times[k] - a) / HOP_S + 1e-9), len(vals) - 1)
            f0[k] = midi_hz(p + vals[j] / 8192 * BEND_RANGE)
    if fx and fam in ("guitar", "bass", "synth_lead") and rng.random() < 0.6:
        sc = Mix([Part(score=sc, fx=lambda x: src.amp_chain(rng, x, drive=None if fam != "bass" else rng.random() < 0.3))])
    return sc, dur, {"times": times, "f0": f0, "labels": [fam]}


def gen_pitch_v3(rng, version: int = 3, split: str = "train"):
    """Singers, GM melodies (guitars and basses through amps), plucked strings, harmonic tones and pure
    sines, from E1 to C7."""
    dur = 8.0
    kind = rng.choice(["voice", "gm", "pluck", "tone", "sine"], p=[0.3, 0.3, 0.15, 0.13, 0.12])
    if kind == "gm":
        return gen_pitch_gm(rng, (28, 96), fx=True)
    steady = kind in ("tone", "sine", "pluck") and rng.random() < 0.4
    if kind == "voice":
        sex = str(rng.choice(["male", "female"]))
        lo, hi = src.SINGER_RANGES[sex]
        notes = _melody(rng, lo, hi, rng.uniform(0.1, 0.6), dur - 0.3, rng.uniform(60, 160))
        audio, f0, _ = _sing(rng, notes, dur, sex, version, split)
        fx = (lambda x: src.vocal_chain(rng, x)) if rng.random() < 0.7 else None
        label = f"voice_{sex}"
    else:
        lo, hi = {"pluck": (28, 84), "tone": (28, 96), "sine": (28, 96)}[kind]
        if kind == "pluck" and rng.random() < 0.4:
            hi = 55  # basses
        notes = (_sustained if steady else lambda r, a, b, c, d: _melody(r, a, b, c, d, r.uniform(60, 160)))(
            rng, lo, hi, rng.uniform(0.1, 0.6), dur - 0.3)
        if kind == "pluck":
            audio, f0 = src.pluck(rng, notes, dur)
            fx = (lambda x: src.amp_chain(rng, x)) if rng.random() < 0.5 else None
        else:
            audio, f0 = src.tone(rng, notes, dur, pure=kind == "sine")
            fx = None
        label = str(kind)
    times = np.arange(len(f0)) * HOP_S
    return Mix([Part(audio=audio, fx=fx)]), dur, {"times": times, "f0": f0, "labels": [label]}


# -- onsets --------------------------------------------------------------------------------
def gen_onset(rng, kits: int = 0, version: int = 3, split: str = "train"):
    """GM parts (and drums); from version 3 also sung and plucked lines, alone or over the GM parts."""
    sc, dur, a = gen_onset_gm(rng)
    if version < 3 or rng.random() < 0.55:
        return sc, dur, a
    solo = rng.random() < 0.4
    onsets = [] if solo else list(a["onsets"])
    mix = Mix([] if solo else [Part(score=sc, gain_db=float(rng.uniform(-9, 0)))])
    tempo = rng.uniform(60, 180)
    if rng.random() < 0.55:
        sex = str(rng.choice(["male", "female"]))
        notes = _melody(rng, *src.SINGER_RANGES[sex], rng.uniform(0, 1.0), dur - 0.5, tempo)
        audio, _, ons = _sing(rng, notes, dur, sex, version, split)
        mix.parts.append(Part(audio=audio, fx=(lambda x: src.vocal_chain(rng, x)) if rng.random() < 0.6 else None))
    else:
        notes = _melody(rng, 28 if rng.random() < 0.3 else 40, 84, rng.uniform(0, 1.0), dur - 0.5, tempo * 2)
        audio, _ = src.pluck(rng, notes, dur)
        ons = [n[1] for n in notes]
        mix.parts.append(Part(audio=audio, fx=(lambda x: src.amp_chain(rng, x)) if rng.random() < 0.6 else None))
    merged: list[float] = []
    for t in sorted(onsets + ons):
        if not merged or t - merged[-1] > 0.03:
            merged.append(t)
    return mix, dur, {"onsets": merged, "labels": [f"n={len(merged)}"]}


def gen_onset_gm(rng) -> tuple[Score, float, dict]:
    dur = 8.0
    sc = Score()
    onsets = []
    tempo = rng.uniform(60, 180)
    n_inst = int(rng.integers(1, 4))
    for chan in range(n_inst):
        fam = FAMILIES[rng.integers(len(FAMILIES))]
        prog, lo, hi = _program(rng, fam)
        sc.program(chan, prog)
        for p, a, b in _melody(rng, lo, hi, rng.uniform(0, 1.0), dur - 0.5, tempo * rng.choice([0.5, 1, 2])):
            chord = [p] + ([p + int(rng.choice([3, 4, 7]))] if rng.random() < 0.2 else [])
            for q in chord:
                sc.note(chan, min(q, 108), a, b, int(rng.integers(30, 127)))
            onsets.append(a)
    if rng.random() < 0.5:
        sc.program(DRUM_CHANNEL, int(rng.choice(GM_KITS)))
        beat = 60 / tempo
        t = rng.uniform(0, beat)
        while t < dur - 0.5:
            if rng.random() < 0.6:
                sc.note(DRUM_CHANNEL, int(rng.choice(KICKS + SNARES + HIHATS + DISTRACTORS)), t, t + 0.1,
                        int(rng.integers(40, 127)))
                onsets.append(t)
            t += beat * rng.choice([0.25, 0.5, 1])
    merged: list[float] = []
    for t in sorted(onsets):  # simultaneous notes (within 30 ms) are one onset
        if not merged or t - merged[-1] > 0.03:
            merged.append(t)
    return sc, dur, {"onsets": merged, "labels": [f"n={len(merged)}"]}


# -- chords --------------------------------------------------------------------------------
CHORD_FAMILIES = {"keys": list(range(0, 8)), "guitar": [24, 25, 26, 27, 28], "strings": [48, 49, 50, 51],
                  "organ": list(range(16, 21)), "pad": list(range(88, 96))}


def _chord_part(rng, sc, chan, pitches, a, b, style, beat):
    vel = int(rng.integers(45, 115))
    if style == "block":
        for q in pitches:
            sc.note(chan, q, a, b - 0.02, vel)
    elif style == "strum":
        for k, q in enumerate(pitches):
            sc.note(chan, q, a + k * rng.uniform(0.008, 0.03), b - 0.02, vel)
    elif style == "arp":
        step = beat / 2
        t, k = a, 0
        while t < b - 0.02:
            sc.note(chan, pitches[k % len(pitches)], t, min(t + step * 1.5, b), vel)
            t += step
            k += 1
    else:  # comp: rhythmic stabs
        t = a
        while t < b - 0.05:
            ln = beat * rng.choice([0.25, 0.5, 1])
            for q in pitches:
                sc.note(chan, q, t, min(t + ln * 0.8, b), vel)
            t += beat * rng.choice([0.5, 1])


def gen_chord(rng, kits: int = 0, version: int = 3, split: str = "train") -> tuple[Score, float, dict]:
    dur = float(rng.uniform(14, 20))
    tempo = rng.uniform(60, 150)
    beat = 60 / tempo
    sc = Score()
    fam = list(CHORD_FAMILIES)[rng.integers(len(CHORD_FAMILIES))]
    sc.program(0, int(rng.choice(CHORD_FAMILIES[fam])))
    if rng.random() < 0.3:  # a second chord instrument
        sc.program(2, int(rng.choice(CHORD_FAMILIES[list(CHORD_FAMILIES)[rng.integers(5)]])))
    with_bass = rng.random() < 0.8
    sc.program(1, int(rng.choice(list(range(32, 40)))))
    if rng.random() < 0.3:
        sc.program(DRUM_CHANNEL, int(rng.choice(GM_KITS)))
    style = rng.choice(["block", "strum", "arp", "comp"])
    segs = []
    t = 0.0 if rng.random() < 0.5 else float(rng.uniform(0.3, 1.5))
    if t > 0:
        segs.append((0.0, t, "N"))
    root = int(rng.integers(12))
    while t < dur - 0.5:
        b = min(t + beat * rng.choice([1, 2, 2, 4, 4, 8]), dur)
        if rng.random() < 0.07:
            segs.append((t, b, "N"))
            t = b
            continue
        root = (root + int(rng.choice([0, 2, 3, 4, 5, 5, 7, 7, 8, 9, 10]))) % 12
        minor = rng.random() < 0.45
        ivs = [0, 3 if minor else 4, 7]
        if rng.random() < 0.3:
            ivs.append(10 if minor or rng.random() < 0.5 else 11)
        if rng.random() < 0.15:
            ivs.append(14)
        base = int(rng.integers(48, 60))
        base = base - ((base - root) % 12)  # root pitch class at or below base
        inv = int(rng.choice([0, 0, 0, 1, 2]))
        pitches = sorted(base + iv + (12 if k < inv else 0) for k, iv in enumerate(ivs))
        if rng.random() < 0.3:  # open voicing: drop the second-highest an octave
            pitches[-2] -= 12
        _chord_part(rng, sc, 0, pitches, t, b, style, beat)
        if 2 in sc.programs:
            _chord_part(rng, sc, 2, [q + 12 for q in pitches[:3]], t, b, "block", beat)
        if with_bass:
            bass = base - 24 + ivs[inv if rng.random() < 0.5 else 0]
            while bass < 28:
                bass += 12
            _chord_part(rng, sc, 1, [bass], t, b, rng.choice(["block", "comp"]), beat)
        if DRUM_CHANNEL in sc.programs:
            tt = t
            while tt < b - 0.05:
                sc.note(DRUM_CHANNEL, int(rng.choice(KICKS + SNARES + HIHATS)), tt, tt + 0.1, int(rng.integers(40, 110)))
                tt += beat / 2
        segs.append((t, b, f"{PITCH_CLASSES[root]}:{'min' if minor else 'maj'}"))
        t = b
    if segs[-1][1] < dur:
        segs.append((segs[-1][1], dur, "N"))
    # merge consecutive equal labels
    merged = [list(segs[0])]
    for a, b, lab in segs[1:]:
        if lab == merged[-1][2]:
            merged[-1][1] = b
        else:
            merged.append([a, b, lab])
    return sc, dur, {"segments": [tuple(s) for s in merged], "labels": [s[2] for s in merged]}


# -- drums ---------------------------------------------------------------------------------
def gen_drums(rng, kits: int = 0, version: int = 3, split: str = "train"):
    """A kit (GM banks or the real-kit SoundFonts); from version 3 often inside a full band (bass, chords
    through amps, a singer) with bus compression, and sometimes no drums at all (a solo voice or guitar)."""
    if version < 3:
        sc, dur, a = gen_drums_kit(rng, kits, band=True)
        a.pop("tempo")
        return sc, dur, a
    dur = 8.0
    if rng.random() < (0.25 if version >= 4 else 0.08):  # nothing to find: voice, guitar, GM melody, a band
        kind = rng.choice(["voice", "guitar", "gm", "band"] if version >= 4 else ["voice", "guitar", "gm"])
        if kind == "band":  # the accompaniment of a full-band item, with no kit under it
            return _band(rng, Mix([]), dur, rng.uniform(70, 180), version, split), dur, {"events": [], "labels": []}
        if kind == "voice":
            sex = str(rng.choice(["male", "female"]))
            line = _melody(rng, *src.SINGER_RANGES[sex], 0.2, dur - 0.3, rng.uniform(60, 160))
            audio, _, _ = _sing(rng, line, dur, sex, version, split)
            part = Part(audio=audio, fx=lambda x: src.vocal_chain(rng, x))
        elif kind == "guitar":
            audio, _ = src.pluck(rng, _melody(rng, 40, 84, 0.2, dur - 0.3, rng.uniform(80, 200)), dur)
            part = Part(audio=audio, fx=lambda x: src.amp_chain(rng, x))
        else:
            fam = str(rng.choice(PITCH_FAMILIES))
            prog, lo, hi = _program(rng, fam)
            part = Part(score=_score_of(prog, _melody(rng, lo, hi, 0.2, dur - 0.3, rng.uniform(60, 160)), rng))
        return Mix([part]), dur, {"events": [], "labels": []}
    kit, dur, a = gen_drums_kit(rng, kits, band=False)
    tempo = a.pop("tempo")
    h2 = hydrogen_kits() if split != "test" else ()
    if h2 and rng.random() < 0.5:  # the same pattern on a recorded Hydrogen kit (train/valid only)
        hits = [(e.time, e.a, e.b) for e in kit.events if e.kind == "on" and e.chan == DRUM_CHANNEL]
        k = h2[int(rng.integers(len(h2)))]
        kit = Mix([Part(audio=k.render(hits, dur, rng))])
        a["labels"] = a["labels"] + [f"kit:{k.name}"]
    if rng.random() < 0.35:
        return kit, dur, a
    mix = Mix([Part(score=kit)] if isinstance(kit, Score) else list(kit.parts))
    return _band(rng, mix, dur, tempo, version, split), dur, a


def _band(rng, mix: Mix, dur: float, tempo: float, version: int = 3, split: str = "train") -> Mix:
    """Bass, often chords (keys, organ, guitar through an amp), sometimes a singer, over ``mix``."""
    bass = _score_of(int(rng.choice(list(range(32, 40)))), _melody(rng, 28, 52, 0, dur - 0.3, tempo), rng, (50, 110))
    mix.parts.append(Part(score=bass, gain_db=float(rng.uniform(-10, 0)),
                          fx=(lambda x: src.amp_chain(rng, x, drive=rng.random() < 0.3)) if rng.random() < 0.4 else None))
    if rng.random() < 0.8:  # chords: keys, organ or guitar (often distorted)
        prog = int(rng.choice(list(range(0, 8)) + list(range(24, 31)) + list(range(16, 20))))
        ch = Score()
        ch.program(0, prog)
        for p, a0, b0 in _melody(rng, 48, 72, 0, dur - 0.3, tempo / 2):
            for q in (p, p + 7) if rng.random() < 0.5 else (p, p + 4, p + 7):
                ch.note(0, q, a0, b0, int(rng.integers(50, 110)))
        guitar = 24 <= prog <= 31
        mix.parts.append(Part(score=ch, gain_db=float(rng.uniform(-10, 2)),
                              fx=(lambda x: src.amp_chain(rng, x, drive=rng.random() < 0.7)) if guitar else None))
    if rng.random() < 0.5:
        sex = str(rng.choice(["male", "female"]))
        audio, _, _ = _sing(rng, _melody(rng, *src.SINGER_RANGES[sex], 0.2, dur - 0.3, tempo), dur, sex, version, split)
        mix.parts.append(Part(audio=audio, gain_db=float(rng.uniform(-8, 2)), fx=lambda x: src.vocal_chain(rng, x)))
    if rng.random() < 0.6:
        mix.bus = lambda x: src.bus(rng, x)
    return mix


def gen_drums_kit(rng, kits: int = 0, band: bool = True):
    dur = 8.0
    tempo = rng.uniform(70, 180)
    swing = rng.choice([0.0, 0.0, rng.uniform(0.05, 0.3)])
    sixteenth = 60 / tempo / 4
    sc = Score()
    font = int(rng.integers(0, kits + 1)) if kits else 0
    sc.program(DRUM_CHANNEL, int(rng.choice(GM_KITS)), font=font)
    events = []
    hat_div = int(rng.choice([1, 2, 2, 4]))  # hi-hat every 1, 2 or 4 sixteenths
    ride = rng.random() < 0.2
    kick_p = rng.uniform(0.1, 0.4)
    t0 = rng.uniform(0, 0.5)
    k = 0
    while True:
        t = t0 + k * sixteenth + (swing * sixteenth if k % 2 else 0.0) + rng.normal(0, 0.005)
        if t > dur - 0.3:
            break
        pos = k % 16
        hits = []
        if pos == 0 or (pos % 4 != 0 and rng.random() < kick_p / 2) or (pos == 8 and rng.random() < 0.7):
            hits.append(("kick", int(rng.choice(KICKS))))
        if pos in (4, 12) or rng.random() < 0.04:
            hits.append(("snare", int(rng.choice(SNARES))))
        if pos % hat_div == 0:
            if ride:
                hits.append((None, 51))
            else:
                hits.append(("hihat", int(rng.choice(HIHATS, p=[0.8, 0.08, 0.12]))))
        if rng.random() < 0.04:
            hits.append((None, int(rng.choice(DISTRACTORS))))
        if pos == 0 and k // 16 % 4 == 0 and rng.random() < 0.3:
            hits.append((None, int(rng.choice([49, 57]))))
        for cls, note in hits:
            tt = max(0.0, t + rng.normal(0, 0.003))
            sc.note(DRUM_CHANNEL, note, tt, tt + 0.1, int(np.clip(rng.normal(95, 20), 20, 127)))
            if cls:
                events.append((tt, cls))
        k += 1
    if band and rng.random() < 0.5:  # pitched accompaniment
        sc.program(0, int(rng.choice(list(range(32, 40)))))
        sc.program(1, int(rng.choice(list(range(0, 8)) + list(range(24, 30)) + list(range(16, 20)))))
        for p, a, b in _melody(rng, 28, 52, 0, dur - 0.3, tempo):
            sc.note(0, p, a, b, int(rng.integers(50, 110)))
        for p, a, b in _melody(rng, 55, 79, 0, dur - 0.3, tempo / 2):
            for q in (p, p + 4, p + 7):
                sc.note(1, q, a, b, int(rng.integers(40, 90)))
    events.sort()
    return sc, dur, {"events": events, "labels": [c for _, c in events], "tempo": tempo}


# -- instrument ----------------------------------------------------------------------------
def gen_instrument(rng, kits: int = 0, version: int = 3, split: str = "train"):
    """One family: GM programs; from version 3 also synthesised singers (vocal), plucked strings (guitar,
    bass) and guitars, basses and leads through amps and effects."""
    fam = FAMILIES[rng.integers(len(FAMILIES))]
    if version >= 3:
        dur = 3.0
        if fam == "vocal" and rng.random() < 0.7:
            sex = str(rng.choice(["male", "female"]))
            lo, hi = src.SINGER_RANGES[sex]
            notes = (_melody(rng, lo, hi, rng.uniform(0, 0.3), dur - 0.1, rng.uniform(60, 160)) if rng.random() < 0.8
                     else _sustained(rng, lo, hi, rng.uniform(0, 0.3), dur - 0.1))
            audio, _, _ = _sing(rng, notes, dur, sex, version, split)
            fx = (lambda x: src.vocal_chain(rng, x)) if rng.random() < 0.7 else None
            return Mix([Part(audio=audio, fx=fx)]), dur, {"family": fam, "labels": [fam]}
        if fam in ("guitar", "bass") and rng.random() < 0.3:
            lo, hi = (28, 62) if fam == "bass" else (40, 84)
            t0, tempo = rng.uniform(0, 0.3), rng.uniform(80, 200)
            notes = (_strums(rng, t0, dur - 0.1, tempo) if version >= 5 and fam == "guitar" and rng.random() < 0.4
                     else _melody(rng, lo, hi, t0, dur - 0.1, tempo))
            audio, _ = src.pluck(rng, notes, dur)
            drive = fam == "guitar" and rng.random() < 0.6
            fx = (lambda x: src.amp_chain(rng, x, drive=drive)) if rng.random() < 0.6 else None
            return Mix([Part(audio=audio, fx=fx)]), dur, {"family": fam, "labels": [fam]}
        sc, dur, a = gen_instrument_gm(rng, fam, bass_high=True, expressive=version >= 5)
        if fam in ("guitar", "bass", "synth_lead") and rng.random() < 0.5:
            drive = rng.random() < (0.6 if fam == "guitar" else 0.25)
            sc = Mix([Part(score=sc, fx=lambda x: src.amp_chain(rng, x, drive=drive))])
        return sc, dur, a
    return gen_instrument_gm(rng, fam)


def gen_instrument_gm(rng, fam: str, bass_high: bool = False, expressive: bool = False) -> tuple[Score, float, dict]:
    """One GM program playing a note, a phrase or dyads; ``expressive`` (generator 5): the player's vibrato,
    bends and swells, and guitars strumming chords."""
    dur = 3.0
    prog, lo, hi = _program(rng, fam)
    if fam == "bass" and bass_high:
        hi += 7  # (generator 3) basses are played high too (a double bass in thumb position)
    sc = Score()
    sc.program(0, prog)
    if expressive and fam == "guitar" and rng.random() < 0.35:
        for p, a, b in _strums(rng, rng.uniform(0, 0.3), dur - 0.1, rng.uniform(70, 160)):
            sc.note(0, p, a, b, int(rng.integers(50, 120)))
        return sc, dur, {"family": fam, "labels": [fam]}
    mode = rng.choice(["note", "phrase", "poly"], p=[0.4, 0.4, 0.2])
    if mode == "note":
        p = int(rng.integers(lo, hi + 1))
        a = rng.uniform(0.0, 0.3)
        notes = [(p, a, a + rng.uniform(0.5, 2.5))]
    else:
        notes = _melody(rng, lo, hi, rng.uniform(0, 0.3), dur - 0.1, rng.uniform(80, 180))
    for p, a, b in notes:
        sc.note(0, p, a, b, int(rng.integers(40, 127)))
        if mode == "poly" and fam not in ("flute", "reed", "brass", "vocal", "synth_lead", "bass"):
            sc.note(0, min(p + int(rng.choice([3, 4, 7, 12])), 108), a, b, int(rng.integers(40, 127)))
    if expressive:
        _expression(rng, sc, fam, notes)
    return sc, dur, {"family": fam, "labels": [fam]}


# (generator 5) how often players of a family use vibrato, and its depth in cents; swells are for the families
# that can change a held note's loudness (bowed, blown, sung, an organ's swell pedal, a synth's filter)
VIBRATO = {"string": (0.8, 15, 50), "vocal": (0.8, 20, 80), "reed": (0.6, 10, 40), "flute": (0.6, 10, 35),
           "brass": (0.5, 10, 40), "synth_lead": (0.4, 10, 60), "guitar": (0.25, 10, 40), "bass": (0.1, 5, 20)}
SWELLS = ("string", "vocal", "reed", "flute", "brass", "organ", "synth_lead")


def _expression(rng, sc: Score, fam: str, notes) -> None:
    """Per-note vibrato (delayed, 4-7 Hz), guitar string bends and expression swells (CC 11), as 10-ms
    pitch-bend and 20-ms controller curves on channel 0."""
    use, lo, hi = VIBRATO.get(fam, (0.0, 0, 0))
    for _p, a, b in notes:
        tt = np.arange(a, b, HOP_S)
        cents = np.zeros_like(tt)
        if fam == "guitar" and rng.random() < 0.15:  # a bend up one or two semitones and back
            up, t_up = 100 * rng.choice([1, 2]), rng.uniform(0.05, 0.2)
            cents += up * np.clip((tt - a) / t_up, 0, 1)
        if rng.random() < use:
            rate, depth, delay = rng.uniform(4.5, 7), rng.uniform(lo, hi), rng.uniform(0.0, 0.4)
            cents += np.where(tt - a > delay, depth * np.sin(2 * np.pi * rate * (tt - a - delay)), 0.0)
        if cents.any():
            for t, c in zip(tt, cents):
                sc.add(t, "bend", 0, bend_value(c / 100))
            sc.add(b, "bend", 0, 0)
        if fam in SWELLS and rng.random() < 0.5:
            t20 = np.arange(a, b, 0.02)
            v0, v1 = rng.uniform(40, 127, 2)
            shape = np.sin(np.pi * (t20 - a) / max(b - a, 1e-3)) if rng.random() < 0.5 else (t20 - a) / max(b - a, 1e-3)
            for t, x in zip(t20, v0 + (v1 - v0) * shape):
                sc.add(t, "cc", 0, 11, int(np.clip(x, 1, 127)))
            sc.add(b, "cc", 0, 11, 127)


# (generator 5) open-position guitar chord shapes as semitones above the low E string's E2 (MIDI 40), six strings
GUITAR_SHAPES = ([0, 7, 12, 16, 19, 24], [0, 7, 12, 15, 19, 24], [5, 12, 17, 21, 24], [5, 12, 17, 20, 24],
                 [3, 7, 10, 15, 19, 27], [10, 17, 22, 26], [0, 7, 10, 16, 19, 24], [2, 9, 14, 17], [7, 14, 19, 23, 26])


def _strums(rng, t0: float, t1: float, tempo: float) -> list[tuple[int, float, float]]:
    """Strummed guitar chords: a shape moved up the neck, 3-6 strings struck 4-35 ms apart, down and up
    strokes on the beat or half-beat, each ringing to the next stroke or chopped short."""
    beat = 60.0 / tempo * rng.choice([0.5, 1.0])
    notes, t, down = [], t0, True
    shape = np.array(GUITAR_SHAPES[rng.integers(len(GUITAR_SHAPES))]) + 40 + int(rng.integers(0, 8))
    while t < t1 - 0.05:
        if rng.random() < 0.2:
            shape = np.array(GUITAR_SHAPES[rng.integers(len(GUITAR_SHAPES))]) + 40 + int(rng.integers(0, 8))
        k = int(rng.integers(3, len(shape) + 1))
        strings = shape[:k] if down else shape[::-1][:k]
        gap = rng.uniform(0.004, 0.035)
        end = min(t + beat * (rng.uniform(0.3, 0.6) if rng.random() < 0.25 else 1.0), t1)
        for i, p in enumerate(strings):
            if t + i * gap < end - 0.02:
                notes.append((int(p), t + i * gap, end))
        t += beat
        down = not down if rng.random() < 0.8 else down
    return notes


GENERATORS = {"pitch": gen_pitch, "onset": gen_onset, "chord": gen_chord, "drums": gen_drums,
              "instrument": gen_instrument}
KIT_GENERATORS = (gen_drums,)  # generators that also play the recorded Hydrogen kits (train/kits.py)


def write_item(task: str, folder: Path, name: str, audio: np.ndarray, a: dict) -> None:
    sf.write(folder / f"{name}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
    path = folder / (name + REGISTRY[task].suffix)
    fmt = REGISTRY[task].format
    if fmt == "f0":
        ann.write_f0(path, a["times"], a["f0"])
    elif fmt == "times":
        ann.write_times(path, a["onsets"])
    elif fmt == "segments":
        ann.write_lab(path, a["segments"])
    elif fmt == "events":
        ann.write_drums(path, a["events"])
    else:
        ann.write_label(path, a["family"])


def write_dataset(task: str, split: str, minutes: float, seed: int, out: Path,
                  soundfont: Path | None = None, progress: bool = True, version: int = int(GENERATOR_VERSION)) -> dict:
    """Render ``minutes`` of labelled audio for one task and split into ``out`` (``version``: the generator's,
    2 reproduces the earlier material)."""
    if task not in TASKS:
        raise UserError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    if minutes <= 0:
        raise UserError("--minutes must be positive")
    if version not in (2, 3, 4, 5, 6):
        raise UserError(f"unknown generator version {version} (2 to 6)")
    gm = [Path(soundfont)] if soundfont else gm_soundfonts(split)
    kits = extra_drum_kits(split) if GENERATORS[task] in KIT_GENERATORS and soundfont is None else []
    fonts = gm + kits
    renderer = Renderer(fonts, n_gm=len(gm))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, SPLITS.index(split), TASKS.index(task)])
    items, total, hist = [], 0.0, Counter()
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task(f"rendering {task}/{split}", total=minutes * 60)
        while total < minutes * 60:
            score, dur, a = GENERATORS[task](rng, kits=len(kits), version=version, split=split)
            if len(gm) > 1:
                score.use_bank(int(rng.integers(len(gm))), len(gm))
            audio = realism(rng, render_item(renderer, score, dur))
            name = f"{task}_{split}_{len(items):05d}"
            write_item(task, out, name, audio, a)
            used = sorted({fonts[f].name for f, _ in score.programs.values()})
            items.append({"name": name, "duration": dur, "soundfonts": used})
            hist.update(["onset"] * len(a["onsets"]) if REGISTRY[task].format == "times" else a["labels"])
            total += dur
            bar.update(job, advance=dur)
    manifest = {
        "task": task, "split": split, "seed": seed, "generator_version": str(version),
        "soundfonts": [p.name for p in fonts], "sample_rate": SAMPLE_RATE,
        "minutes": round(total / 60, 3), "items": items, "label_histogram": dict(sorted(hist.items())),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest




def render_demo(out: Path, seconds: float = 16.0, seed: int = 7) -> Path:
    """A short demo clip for devices without a microphone: a chord progression on keys over bass and
    drums, with a flute melody on top (FluidR3_GM, MIT licensed samples)."""
    rng = np.random.default_rng(seed)
    sc, dur, a = gen_chord(rng)
    while dur < seconds:
        sc, dur, a = gen_chord(rng)
    sc.program(DRUM_CHANNEL, 0)
    tempo = 100.0
    beat = 60 / tempo
    t = 0.0
    while t < seconds - 0.2:  # a steady backbeat under the progression
        pos = round(t / beat * 2) % 8
        sc.note(DRUM_CHANNEL, 36 if pos in (0, 4) else 38 if pos in (2, 6) else 42, t, t + 0.1, 100)
        sc.note(DRUM_CHANNEL, 42, t, t + 0.1, 70)
        t += beat / 2
    sc.program(3, 73)  # flute
    for p, a0, b0 in _melody(rng, 72, 86, 0.5, seconds - 0.5, tempo):
        sc.note(3, p, a0, b0, 90)
    audio = Renderer([default_soundfont("train")]).render(sc, seconds)
    audio = (audio / (np.abs(audio).max() + 1e-9) * 0.5).astype(np.float32)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out, audio, SAMPLE_RATE, subtype="PCM_16")
    return out


def bench_render(minutes: float = 10.0) -> dict[str, float]:
    """Print how long rendering ``minutes`` of each task takes (a benchmark, not a test)."""
    import tempfile
    import time

    out = {}
    for task in TASKS:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            write_dataset(task, "train", minutes, 0, Path(d), progress=False)
            out[task] = time.perf_counter() - t0
        print(f"{task:<11} {minutes:g} min rendered in {out[task]:6.1f} s ({minutes * 60 / out[task]:.0f}x real time)")
    return out
