"""Reading audio files for analysis: validated, down-mixed and resampled to 16 kHz mono."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemir.errors import UserError
from edgemir.labels import SAMPLE_RATE

DEMO = Path(__file__).parent / "data" / "demo.wav"  # played when no input device exists


def check_finite(x: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        raise UserError(f"{what}: {int(bad.sum())} NaN/inf samples; refusing to analyse corrupt audio")


class AudioReader:
    """Streams a file as mono float32 16 kHz blocks (flat memory for hour-long files).

    Everything that can be checked before analysing is checked on opening (missing, non-audio,
    cut WAV data chunk); NaN/inf samples and a short read of a compressed file are found while
    reading and raise the same one-line UserError.
    """

    def __init__(self, path: Path) -> None:
        import soundfile as sf

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: file not found")
        try:
            self.f = sf.SoundFile(str(self.path))
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"{self.path}: not a readable audio file ({msg})") from None
        self.sr, self.frames = self.f.samplerate, self.f.frames
        if self.path.suffix.lower() == ".wav":
            _check_wav_size(self.path, self.frames)
        self.duration = self.frames / self.sr if self.frames > 0 else 0.0
        self.rewind()

    def rewind(self) -> None:
        try:
            self.f.seek(0)
        except Exception as e:  # libsndfile: e.g. "Internal psf_fseek() failed" on a cut FLAC
            raise UserError(f"{self.path}: unreadable audio data ({str(e).splitlines()[0] or type(e).__name__})") from None
        self.got = 0  # input frames read so far
        self.eof = False
        self.pending = np.zeros(0, dtype=np.float32)
        self.resampler = None
        if self.sr != SAMPLE_RATE:
            import soxr

            self.resampler = soxr.ResampleStream(self.sr, SAMPLE_RATE, 1, dtype="float32", quality="HQ")

    def read(self, n: int) -> np.ndarray | None:
        """Up to ``n`` samples at 16 kHz, or None at the end."""
        while len(self.pending) < n and not self.eof:
            want = max(4096, int(np.ceil(n * self.sr / SAMPLE_RATE)))
            try:
                x = self.f.read(want, dtype="float32", always_2d=True)
            except Exception as e:
                raise UserError(f"{self.path}: unreadable audio data ({str(e).splitlines()[0]})") from None
            self.got += len(x)
            last = len(x) < want
            if last:
                self.eof = True
                if self.frames > 0 and self.got < self.frames:
                    raise UserError(f"{self.path}: truncated audio ({self.got} of {self.frames} frames)")
            check_finite(x, str(self.path))
            y = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
            if self.resampler is not None:
                y = self.resampler.resample_chunk(np.ascontiguousarray(y), last=last)
            self.pending = np.concatenate([self.pending, y.astype(np.float32, copy=False)])
        if not len(self.pending) and self.eof:
            return None
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def close(self) -> None:
        self.f.close()


def read_audio(path: Path) -> np.ndarray:
    """A whole file as mono float32 at 16 kHz (the streaming reader, collected)."""
    r = AudioReader(path)
    parts = []
    while (x := r.read(SAMPLE_RATE * 60)) is not None:
        parts.append(x)
    r.close()
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def _check_wav_size(path: Path, frames: int) -> None:
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
