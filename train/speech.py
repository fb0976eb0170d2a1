"""Singers made from recorded voices: Festival's voices (Debian packages, built from real speakers' recordings)
read lyrics; the WORLD vocoder (pyworld) takes each utterance apart into its spectral envelope, aperiodicity and
voicing, and puts it back together at a melody's f0, its voiced syllables stretched over the notes and its
consonants kept before them. The timbre, formant moves, consonants and breath are a real vocal tract's; the f0
is the one we set, so labels stay exact (voiced where the resynthesis is voiced and audible).

Needs ``festival`` with the voices ``festvox-us-slt-hts`` (female), ``festvox-kallpc16k`` and
``festvox-kdlpc16k`` (male) and ``pyworld``; utterances are rendered once into a cache folder.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from scipy import signal

from edgemir.errors import UserError
from edgemir.labels import SAMPLE_RATE
from train import sources as src

SR = SAMPLE_RATE
FRAME_MS = 5.0  # WORLD's frame period
VOICES = {"female": ["cmu_us_slt_arctic_hts"], "male": ["kal_diphone", "ked_diphone"]}
WORDS = ("love night heart baby fire dream light away home down road time rain gone feel tonight never again "
         "always hold alone river sky moon summer blue golden shine wild free stay wait burn run cry fall call "
         "morning eyes hands slow lonely dancing city sweet yeah oh whoa hey la na tell me you we they she "
         "and the to my your our with in on for so now").split()
N_LINES = 24  # lyric lines per voice in the cache: the last TEST_LINES only for test splits
TEST_LINES = 4


class NoSpeech(UserError):
    """Festival or a voice is missing."""


def cache_dir() -> Path:
    d = Path(os.environ.get("EDGEMIR_SPEECH_CACHE", Path.home() / ".cache" / "edgemir-train" / "speech"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def lyric(i: int) -> str:
    """Line ``i`` of the fixed lyric sheet (the same on every machine)."""
    r = np.random.default_rng(1000 + i)
    return " ".join(WORDS[j] for j in r.integers(len(WORDS), size=int(r.integers(6, 12)))) + "."


def _tts(voice: str, text: str, out: Path) -> None:
    if shutil.which("text2wave") is None:
        raise NoSpeech("festival's text2wave is not installed (apt-get install festival festvox-us-slt-hts "
                       "festvox-kallpc16k festvox-kdlpc16k)")
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write(text)
        f.flush()
        r = subprocess.run(["text2wave", "-eval", f"(voice_{voice})", "-o", str(out), f.name],
                           capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or not out.exists() or "not defined" in r.stderr or "not found" in r.stderr.lower():
        out.unlink(missing_ok=True)
        raise NoSpeech(f"festival could not speak with voice {voice}: {r.stderr.strip()[:200]}")


@functools.lru_cache(maxsize=128)
def analysis(voice: str, i: int) -> dict[str, np.ndarray]:
    """WORLD's analysis of lyric line ``i`` spoken by ``voice`` at 16 kHz: f0 (Hz, 0 unvoiced), spectral envelope,
    aperiodicity, one row per 5 ms (cached on disk)."""
    import pyworld
    import soundfile as sf
    import soxr

    npz = cache_dir() / f"{voice}-{i:03d}.npz"
    if npz.exists():
        d = np.load(npz)
        return {k: d[k].astype(np.float64) for k in d.files}
    wav = npz.with_suffix(".wav")
    if not wav.exists():
        _tts(voice, lyric(i), wav)
    x, sr = sf.read(wav, dtype="float64", always_2d=True)
    x = soxr.resample(x[:, 0], sr, SR) if sr != SR else x[:, 0]
    x = x / (np.abs(x).max() + 1e-9) * 0.5
    f0, t = pyworld.dio(x, SR, frame_period=FRAME_MS, f0_floor=60.0, f0_ceil=500.0)
    f0 = pyworld.stonemask(x, f0, t, SR)
    sp = pyworld.cheaptrick(x, f0, t, SR)
    ap = pyworld.d4c(x, f0, t, SR)
    lvl = 10 * np.log10(sp.mean(axis=1) + 1e-12)
    out = {"f0": f0, "sp": sp.astype(np.float32), "ap": ap.astype(np.float32), "level_db": lvl - lvl.max()}
    tmp = npz.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(npz)
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of the True runs."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _stretch(a: np.ndarray, n: int) -> np.ndarray:
    """Rows of ``a`` resampled (linearly) to ``n`` rows."""
    if n <= 0:
        return a[:0]
    pos = np.linspace(0, len(a) - 1, n)
    i = np.floor(pos).astype(int)
    j = np.minimum(i + 1, len(a) - 1)
    w = (pos - i)[:, None] if a.ndim == 2 else pos - i
    return a[i] * (1 - w) + a[j] * w


def sing(rng: np.random.Generator, notes: list[tuple[float, float, float]], dur: float,
         sex: str | None = None, test: bool = False) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """A sung line from a recorded voice: notes (midi, start, end) -> (audio, f0 per 10-ms frame, onsets).

    Each note takes the next voiced syllable of a spoken lyric line, stretched over the note, with the
    consonants spoken before it (up to 150 ms) placed before the note's start; the f0 is the note's, with
    vibrato (4.5-7.5 Hz, up to ±100 cents, delayed), scoops and portamento, and a slow drift. ``test``: the
    lyric lines kept for test splits (the voices are the same: Debian has few)."""
    import pyworld

    sex = sex or str(rng.choice(["male", "female"]))
    voice = VOICES[sex][rng.integers(len(VOICES[sex]))]
    a = analysis(voice, int(rng.integers(N_LINES - TEST_LINES, N_LINES) if test else rng.integers(N_LINES - TEST_LINES)))
    fr = FRAME_MS / 1000
    nf = int(round(dur / fr)) + 1
    f0 = np.zeros(nf)
    sp = np.tile(a["sp"][np.argmin(a["level_db"])], (nf, 1)) * 1e-4  # near silence between phrases
    ap = np.ones((nf, a["ap"].shape[1]))
    loud = a["level_db"] > -45
    syl = [(s, e) for s, e in _runs((a["f0"] > 0) & loud) if e - s >= 6]  # voiced syllables of >= 30 ms
    if not syl:
        raise NoSpeech(f"{voice}: no voiced syllable found")
    k = int(rng.integers(len(syl)))
    vib_rate, vib_depth = rng.uniform(4.5, 7.5), rng.choice([0.0, rng.uniform(10, 40), rng.uniform(40, 100)])
    shift = rng.uniform(0.97, 1.03)  # formant scale: a slightly different vocal tract
    onsets: list[float] = []
    prev_end, prev_pitch = -1.0, None
    for m, t0, t1 in sorted(notes, key=lambda x: x[1]):
        ka, kb = int(round(t0 / fr)), min(int(round(t1 / fr)), nf)
        if kb - ka < 6:
            continue
        s, e = syl[k % len(syl)]
        prev_voiced_end = syl[k % len(syl) - 1][1] if k % len(syl) else 0
        k += 1
        c0 = max(prev_voiced_end, s - 30)  # the consonants before the syllable (<= 150 ms)
        cons = np.arange(c0, s)
        cons = cons[loud[cons]] if len(cons) else cons
        legato = prev_pitch is not None and t0 - prev_end < 0.06
        if len(cons) and not legato:
            kc = max(0, ka - len(cons))
            n = ka - kc
            sp[kc:ka] = a["sp"][cons[-n:]] if n else sp[kc:ka]
            ap[kc:ka] = a["ap"][cons[-n:]] if n else ap[kc:ka]
            f0[kc:ka] = 0.0
            onsets.append(kc * fr)
        else:
            onsets.append(t0)
        c = src.sung_cents(rng, m, np.arange(kb - ka) * fr, prev_pitch if legato else None, vib_rate, vib_depth)
        f0[ka:kb] = 440.0 * 2 ** (c / 1200)
        # the syllable's voiced frames spread over the note; its level shaped by a release at the end
        sp[ka:kb] = _stretch(a["sp"][s:e], kb - ka)
        ap[ka:kb] = _stretch(a["ap"][s:e], kb - ka)
        rel = np.clip((kb - ka - np.arange(kb - ka)) / max(1, rng.uniform(0.03, 0.1) / fr), 0.02, 1.0)
        sp[ka:kb] *= (rel ** 2)[:, None] * 10 ** (rng.uniform(-6, 0) / 10)
        prev_end, prev_pitch = t1, m
    drift = signal.filtfilt(*signal.butter(1, 0.02), np.cumsum(rng.normal(0, 0.8, nf)))
    f0 = np.where(f0 > 0, f0 * 2 ** (np.clip(drift - drift.mean(), -15, 15) / 1200), 0.0)
    if shift != 1.0:  # warp the envelope's frequency axis
        nb = sp.shape[1]
        src_bins = np.clip(np.arange(nb) / shift, 0, nb - 1)
        sp = np.stack([np.interp(src_bins, np.arange(nb), row) for row in sp])
    y = pyworld.synthesize(np.ascontiguousarray(f0), np.ascontiguousarray(sp), np.ascontiguousarray(ap), SR,
                           frame_period=FRAME_MS)
    n = int(round(dur * SR))
    y = np.pad(y, (0, max(0, n - len(y))))[:n]
    y = y / (np.abs(y).max() + 1e-9) * 0.5
    # 10-ms labels: voiced and within 30 dB of the line's loudest voiced frame
    lvl = 10 * np.log10(sp.mean(axis=1) + 1e-20)
    voiced = (f0 > 0) & (lvl > (lvl[f0 > 0].max() if (f0 > 0).any() else 0) - 30)
    t = np.arange(int(round(dur / 0.01))) * 0.01
    idx = np.minimum(np.round(t / fr).astype(int), nf - 1)
    return y.astype(np.float32), np.where(voiced[idx], f0[idx], 0.0), onsets
