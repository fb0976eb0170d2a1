"""Render note events to audio with real recorded samples (SoundFonts, through FluidSynth).

pretty_midi's own ``fluidsynth()`` reloads the SoundFont for every instrument and has no pitch
bend timing control, so we drive pyfluidsynth directly: one synth per SoundFont per process,
events applied in time order, pitch-bend range set explicitly so f0 labels are exact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgemir.errors import UserError
from edgemir.labels import SAMPLE_RATE

BEND_RANGE = 2  # semitones, set through RPN 0 on every channel
DRUM_CHANNEL = 9


# General MIDI banks for train/valid: FluidR3_GM (required) and, when installed, MuseScore General
# (musescore-general-soundfont-small) and the csound GM bank (csound-soundfont). Each item draws one,
# so the models hear several recordings of every instrument. The test split keeps TimGM6mb alone.
TRAIN_GM_POOL = (Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), Path("/usr/share/sounds/sf3/MuseScore_General.sf3"),
                 Path("/usr/share/sounds/sf2/sf_GMbank.sf2"))


def default_soundfont(split: str) -> Path:
    """FluidR3_GM for train/valid, pretty_midi's TimGM6mb for test (cross-soundfont)."""
    if split == "test":
        import pretty_midi

        return Path(os.path.dirname(pretty_midi.__file__)) / "TimGM6mb.sf2"
    return TRAIN_GM_POOL[0]


def gm_soundfonts(split: str) -> list[Path]:
    """The General MIDI banks a split draws from: the default one plus the installed pool (train/valid)."""
    if split == "test":
        return [default_soundfont(split)]
    return [TRAIN_GM_POOL[0]] + [p for p in TRAIN_GM_POOL[1:] if p.exists()]


def extra_drum_kits(split: str) -> list[Path]:
    """Real recorded drum kits (Debian avldrums.lv2-soundfont) used for train/valid variety."""
    if split == "test":
        return []
    d = Path("/usr/share/sounds/sf2")
    return [p for p in (d / "Black_Pearl_4_LV2.sf2", d / "Red_Zeppelin_4_LV2.sf2") if p.exists()]


@dataclass(order=True)
class Event:
    """One synth event; ``kind`` in on/off/prog/bend/cc."""

    time: float
    order: int
    kind: str = field(compare=False)
    chan: int = field(compare=False)
    a: int = field(compare=False, default=0)
    b: int = field(compare=False, default=0)


class Score:
    """A list of timed synth events, built by the task generators."""

    _ORDER = {"prog": 0, "cc": 1, "off": 2, "bend": 3, "on": 4}

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.programs: dict[int, tuple[int, int]] = {}  # chan -> (font index, program)

    def program(self, chan: int, program: int, font: int = 0) -> None:
        self.programs[chan] = (font, program)

    def use_bank(self, bank: int, n_gm: int) -> None:
        """Play font 0 (the "General MIDI bank") from GM bank ``bank``; drum kits 1.. follow the ``n_gm`` banks."""
        self.programs = {c: (bank if f == 0 else n_gm - 1 + f, p) for c, (f, p) in self.programs.items()}

    def add(self, t: float, kind: str, chan: int, a: int = 0, b: int = 0) -> None:
        self.events.append(Event(max(0.0, t), self._ORDER[kind], kind, chan, a, b))

    def note(self, chan: int, pitch: int, t0: float, t1: float, vel: int) -> None:
        self.add(t0, "on", chan, int(pitch), int(np.clip(vel, 1, 127)))
        self.add(t1, "off", chan, int(pitch))


class Renderer:
    """Holds loaded SoundFonts; renders a Score to mono float32 at 16 kHz."""

    def __init__(self, soundfonts: list[Path], n_gm: int = 1) -> None:
        """``soundfonts``: ``n_gm`` General MIDI banks first, then single-kit drum SoundFonts."""
        import fluidsynth

        self.n_gm = n_gm
        self.paths = [Path(p) for p in soundfonts]
        for p in self.paths:
            if not p.is_file():
                raise UserError(f"soundfont not found: {p} (install fluid-soundfont-gm, or pass --soundfont)")
        self.synth = fluidsynth.Synth(
            gain=0.3, samplerate=float(SAMPLE_RATE),
            **{"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.polyphony": 128},
        )
        self.ids = []
        for p in self.paths:
            sid = self.synth.sfload(str(p))
            if sid < 0:
                raise UserError(f"{p}: not a readable SoundFont")
            self.ids.append(sid)

    def render(self, score: Score, duration: float) -> np.ndarray:
        s = self.synth
        s.system_reset()
        for chan in range(16):
            s.cc(chan, 101, 0)
            s.cc(chan, 100, 0)
            s.cc(chan, 6, BEND_RANGE)
            s.cc(chan, 38, 0)
            s.pitch_bend(chan, 0)
        for chan, (font, prog) in score.programs.items():
            bank = 128 if chan == DRUM_CHANNEL and font < self.n_gm else 0
            if chan == DRUM_CHANNEL and font >= self.n_gm:
                prog = 0  # single-kit drum SoundFonts hold one preset at bank 0
            if s.program_select(chan, self.ids[font], bank, prog) != 0 and chan == DRUM_CHANNEL:
                s.program_select(chan, self.ids[font], bank, 0)
        n_total = int(round(duration * SAMPLE_RATE))
        out = np.zeros(n_total, dtype=np.float32)
        pos = 0
        for ev in sorted(score.events):
            at = min(int(round(ev.time * SAMPLE_RATE)), n_total)
            if at > pos:
                out[pos:at] = self._pull(at - pos)
                pos = at
            if ev.kind == "on":
                s.noteon(ev.chan, ev.a, ev.b)
            elif ev.kind == "off":
                s.noteoff(ev.chan, ev.a)
            elif ev.kind == "bend":
                s.pitch_bend(ev.chan, ev.a)
            elif ev.kind == "cc":
                s.cc(ev.chan, ev.a, ev.b)
        if pos < n_total:
            out[pos:] = self._pull(n_total - pos)
        for chan in range(16):
            s.all_sounds_off(chan)
        self._pull(1024)  # flush
        return out

    def _pull(self, n: int) -> np.ndarray:
        st = self.synth.get_samples(n).astype(np.float32).reshape(-1, 2)
        return st.mean(axis=1) / 32768.0


def bend_value(semitones: float) -> int:
    """Pitch-bend wheel value (−8192…8191) for an offset within ±BEND_RANGE semitones."""
    return int(np.clip(round(semitones / BEND_RANGE * 8192), -8192, 8191))
