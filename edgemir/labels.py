"""Constants shared by training and the device: audio format, vocabularies, task names.

This module is part of the bundle contract: a bundle's card repeats these values and the
engine refuses a bundle whose values differ from what it was built for.
"""

from __future__ import annotations

SAMPLE_RATE: int = 16000
HOP: int = 160  # 10 ms
FRAME_RATE: float = SAMPLE_RATE / HOP

TASKS: tuple[str, ...] = ("pitch", "onset", "chord", "drums", "instrument")

# NSynth instrument families, in a fixed order (class index = position).
FAMILIES: tuple[str, ...] = (
    "bass", "brass", "flute", "guitar", "keyboard", "mallet",
    "organ", "reed", "string", "synth_lead", "vocal",
)
NO_FAMILY = "unknown"  # the instrument answer for a file with no sound the engine could name

DRUM_CLASSES: tuple[str, ...] = ("kick", "snare", "hihat")

PITCH_CLASSES: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# 25-class chord vocabulary: N, then 12 majors, then 12 minors (Harte syntax).
CHORDS: tuple[str, ...] = ("N",) + tuple(f"{p}:maj" for p in PITCH_CLASSES) + tuple(
    f"{p}:min" for p in PITCH_CLASSES
)

# Pitch salience: 20-cent bins from C1 (32.70 Hz), as CREPE, up to D#7 (a tuner's range ends at C7 plus
# vibrato). Bundles before December 2026 have 360 bins (to B6); decoders read the size from the output.
PITCH_BINS: int = 375
PITCH_CENTS_PER_BIN: float = 20.0
PITCH_FMIN: float = 32.703195662574764  # C1


def family_of_program(program: int) -> str | None:
    """NSynth family of a 0-based General MIDI program, or None when it has none."""
    if 0 <= program <= 7:
        return "keyboard"
    if 8 <= program <= 15:
        return "mallet"
    if 16 <= program <= 23:
        return "organ"
    if 24 <= program <= 31:
        return "guitar"
    if 32 <= program <= 39 or program == 43:
        return "bass"
    if program in (40, 41, 42, 44, 45, 46, 48, 49, 50, 51):
        return "string"
    if 52 <= program <= 54:
        return "vocal"
    if 56 <= program <= 63:
        return "brass"
    if 64 <= program <= 71:
        return "reed"
    if 72 <= program <= 79:
        return "flute"
    if 80 <= program <= 87:
        return "synth_lead"
    return None


def hz_to_cents(f: float) -> float:
    """Cents above C1 (the salience axis)."""
    import math

    return 1200.0 * math.log2(f / PITCH_FMIN)


A4_RANGE: tuple[float, float] = (415.0, 466.0)  # concert pitch a tuner accepts (baroque 415 to 466)


def tuning(f0: float, a4: float = 440.0) -> tuple[int, float]:
    """(nearest MIDI note, cents off it) of a frequency, with A4 tuned to ``a4`` Hz."""
    import math

    midi = 69 + 12 * math.log2(f0 / a4)
    n = int(round(midi))
    return n, (midi - n) * 100


def note_name(midi: float) -> str:
    """'A4' style name of the nearest MIDI note."""
    n = int(round(midi))
    return f"{PITCH_CLASSES[n % 12]}{n // 12 - 1}"
