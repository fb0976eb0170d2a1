"""Real recorded drum kits from Hydrogen's drumkit folders (Debian ``hydrogen-drumkits``), played from the
same General MIDI drum scores as the SoundFont kits, for train and valid (the test split keeps its
held-out SoundFont kit).

fluidsynth cannot load Hydrogen kits (an XML list of instruments, each with velocity layers of FLAC/WAV
samples), so this module reads ``drumkit.xml`` and mixes the samples itself.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgemir.labels import SAMPLE_RATE

ROOTS = (Path("/usr/share/hydrogen/data/drumkits"),)
# GM drum notes -> the instrument kind a kit plays for them
GM_KIND = {35: "kick", 36: "kick", 38: "snare", 40: "snare", 42: "hat_closed", 44: "hat_pedal", 46: "hat_open",
           41: "tom", 43: "tom", 45: "tom", 47: "tom", 48: "tom", 50: "tom", 49: "crash", 57: "crash", 52: "crash",
           55: "crash", 51: "ride", 59: "ride", 37: "other", 39: "other", 54: "other", 56: "other"}


def kind_of(name: str) -> str | None:
    """An instrument's kind from its name (kits name them freely: 'BassDrum', 'Sabian Hat Closed', ...)."""
    n = name.lower()
    if "roll" in n or not n.strip():
        return None  # several hits in one sample: no single onset
    if re.search(r"kick|bass ?drum|\bbd\b", n):
        return "kick"
    if re.search(r"hat|\bhh\b|hi-hat", n):
        return "hat_open" if "open" in n or "swish" in n else "hat_pedal" if "pedal" in n else "hat_closed"
    if "snare" in n and "stick" not in n and "rim click" not in n:
        return "snare"
    if "tom" in n:
        return "tom"
    if "ride" in n:
        return "ride"
    if re.search(r"crash|china|splash|cymbal", n):
        return "crash"
    return "other"


class Kit:
    """One Hydrogen kit: instruments by kind, each a list of (min velocity, max velocity, gain, sample path)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.name = self.folder.name
        root = ET.parse(self.folder / "drumkit.xml").getroot()
        ns = re.match(r"\{.*\}", root.tag)
        ns = ns.group(0) if ns else ""
        self.instruments: dict[str, list[tuple[float, list[tuple[float, float, float, Path]]]]] = {}
        for ins in root.iter(ns + "instrument"):
            kind = kind_of(ins.findtext(ns + "name") or "")
            if kind is None:
                continue
            vol = float(ins.findtext(ns + "volume") or 1.0)
            layers = []
            for lay in ins.iter(ns + "layer"):
                f = lay.findtext(ns + "filename")
                if f and (self.folder / f).is_file():
                    layers.append((float(lay.findtext(ns + "min") or 0), float(lay.findtext(ns + "max") or 1),
                                   float(lay.findtext(ns + "gain") or 1), self.folder / f))
            f = ins.findtext(ns + "filename")
            if not layers and f and (self.folder / f).is_file():
                layers.append((0.0, 1.0, 1.0, self.folder / f))
            if layers:
                self.instruments.setdefault(kind, []).append((vol, layers))

    @property
    def usable(self) -> bool:
        """A drum kit: a kick, a snare and a hi-hat at least."""
        return all(k in self.instruments for k in ("kick", "snare")) and any(k.startswith("hat") for k in self.instruments)

    def pick(self, rng: np.random.Generator) -> dict[str, tuple[float, list]]:
        """One instrument per kind for an item (a drummer plays one kit); missing hat kinds use closed."""
        out = {k: v[int(rng.integers(len(v)))] for k, v in self.instruments.items()}
        for k in ("hat_closed", "hat_pedal", "hat_open"):
            out.setdefault(k, out.get("hat_closed") or next(v for kk, v in out.items() if kk.startswith("hat")))
        return out

    def render(self, hits: list[tuple[float, int, int]], dur: float, rng: np.random.Generator) -> np.ndarray:
        """Mix (time, GM note, velocity) hits into ``dur`` seconds of 16-kHz audio."""
        chosen = self.pick(rng)
        n = int(round(dur * SAMPLE_RATE))
        out = np.zeros(n + SAMPLE_RATE * 4, np.float32)
        for t, note, vel in hits:
            kind = GM_KIND.get(note)
            if kind not in chosen:
                continue
            vol, layers = chosen[kind]
            v = vel / 127
            lay = next((la for la in layers if la[0] <= v <= la[1]), layers[-1])
            x = _sample(lay[3])
            i = int(round(t * SAMPLE_RATE))
            m = min(len(x), len(out) - i)
            if m > 0:
                out[i:i + m] += x[:m] * vol * lay[2] * v**1.5
        return out[:n]


@lru_cache(maxsize=4096)
def _sample(path: Path) -> np.ndarray:
    import soundfile as sf
    import soxr

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    x = (soxr.resample(x, sr, SAMPLE_RATE) if sr != SAMPLE_RATE else x).astype(np.float32)
    start = int(np.argmax(np.abs(x) > 0.02 * (np.abs(x).max() + 1e-12)))  # some samples start with up to 18 ms of air
    return x[max(0, start - 16):]


@lru_cache(maxsize=1)
def hydrogen_kits() -> tuple[Kit, ...]:
    """The usable Hydrogen drum kits installed (sorted by name, so datasets are reproducible)."""
    kits = []
    for root in ROOTS:
        for xml in sorted(root.glob("*/drumkit.xml")):
            try:
                k = Kit(xml.parent)
            except (ET.ParseError, OSError, ValueError):
                continue
            if k.usable:
                kits.append(k)
    return tuple(kits)
