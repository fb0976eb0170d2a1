"""Reading audio files for analysis: validated, down-mixed and resampled to 16 kHz mono."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemir.errors import UserError
from edgemir.labels import SAMPLE_RATE


def to_mono_16k(x: np.ndarray, sr: int) -> np.ndarray:
    """Down-mix [n, ch] or [n] and resample to 16 kHz (soxr, as the live source does)."""
    if x.ndim == 2:
        x = x.mean(axis=1)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if sr != SAMPLE_RATE:
        import soxr

        x = soxr.resample(x, sr, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return x


def check_finite(x: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        raise UserError(f"{what}: {int(bad.sum())} NaN/inf samples; refusing to analyse corrupt audio")


def read_audio(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz, or a one-line UserError for missing, non-audio, truncated or NaN files."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        info = sf.info(str(path))
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable audio file ({msg})") from None
    if info.frames > 0 and len(x) < info.frames:
        raise UserError(f"{path}: truncated audio ({len(x)} of {info.frames} frames)")
    if path.suffix.lower() == ".wav":
        _check_wav_size(path, info, len(x))
    check_finite(x, str(path))
    return to_mono_16k(x, sr)


def _check_wav_size(path: Path, info, frames: int) -> None:
    """libsndfile reads a cut WAV without complaint: compare the data chunk with the file size."""
    import struct

    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        while True:
            ch = f.read(8)
            if len(ch) < 8:
                return
            cid, size = ch[:4], struct.unpack("<I", ch[4:])[0]
            if cid == b"data":
                have = path.stat().st_size - f.tell()
                if size != 0xFFFFFFFF and have < size:
                    raise UserError(f"{path}: truncated WAV (data chunk says {size} bytes, {have} present)")
                return
            f.seek(size + (size & 1), 1)
