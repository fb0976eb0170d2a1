"""The shared front-end: STFTs every 10 ms hop, then per-task fixed filterbanks and log.

The same functions run in batch (training, offline analysis) and hop by hop (live). A *framing* says where
frame ``t``'s window lies: it ends ``right`` samples after sample ``t * HOP`` (a stream starts with
``n_fft - right`` zeros), so frame ``t`` can be computed once sample ``t * HOP + right`` has arrived.
``CENTRED`` (1024 samples, centred: 32 ms past the frame) gives the frequency detail that pitch, chords
and instruments need (drums too: docs/live-design.md); ``CAUSAL`` (512 samples ending 7.5 ms past the frame)
lets onsets be reported within 20 ms of a hit. A bundle's card names its framing; the engine runs one STFT per
framing that its bundles use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch import Tensor, nn

from edgemir.labels import HOP, PITCH_FMIN, SAMPLE_RATE

LOG_EPS: float = 1e-5


@dataclass(frozen=True)
class Framing:
    """Where each frame's Hann window lies: ``n_fft`` samples ending ``right`` samples past the frame's time."""

    n_fft: int
    right: int

    @property
    def left(self) -> int:
        return self.n_fft - self.right

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def min_lookahead(self) -> int:
        """The least look-ahead a net on this framing may have: its window still reaches past the labelled
        frame's time (centred: -3, 2 ms; causal: 0, 7.5 ms)."""
        return -(self.right // HOP)

    @property
    def ms_past(self) -> float:
        """How far past its frame's time a window reaches (what a frame waits for), in ms."""
        return 1000.0 * self.right / SAMPLE_RATE

    def card(self) -> dict:
        return {"sample_rate": SAMPLE_RATE, "hop": HOP, "n_fft": self.n_fft, "window": "hann", "left_pad": self.left}

    @staticmethod
    def from_card(fe: object) -> Framing:
        """The framing a bundle card names; ValueError says what is wrong. Cards before framings had a
        ``center_pad`` (half the window: the centred framing)."""
        if not isinstance(fe, dict):
            raise ValueError("no front-end parameters")
        left = fe.get("left_pad", fe.get("center_pad"))
        n = fe.get("n_fft")
        if (fe.get("sample_rate"), fe.get("hop"), fe.get("window")) != (SAMPLE_RATE, HOP, "hann") or not (
                isinstance(n, int) and isinstance(left, int) and n in (256, 512, 1024, 2048) and 0 <= left <= n):
            raise ValueError(f"front-end parameters {fe} are not a framing this engine runs "
                             f"({SAMPLE_RATE} Hz, hop {HOP}, Hann window of 256-2048 samples)")
        return Framing(n, n - left)

    @staticmethod
    def of(features: dict) -> Framing:
        """The framing of a task's feature spec (``n_fft``/``right`` keys; centred without them)."""
        n = int(features.get("n_fft", CENTRED.n_fft))
        return Framing(n, int(features.get("right", n // 2)))


CENTRED = Framing(1024, 512)
CAUSAL = Framing(512, 120)
N_FFT: int = CENTRED.n_fft  # the centred framing's figures (the pitch refiner reads its phases)
N_BINS: int = CENTRED.n_bins


@cache
def _window(n_fft: int) -> tuple[Tensor, float]:
    w = torch.hann_window(n_fft, periodic=True, dtype=torch.float64).float()
    return w, 2.0 / float(w.sum())  # a full-scale sine gives a peak magnitude of ~1


def complex_spectrum(frames: Tensor) -> Tensor:
    """Complex spectra [..., n_fft // 2 + 1] of raw frames [..., n_fft] (scaled as ``spectrum``)."""
    w, scale = _window(frames.shape[-1])
    return torch.fft.rfft(frames * w, dim=-1) * scale


def spectrum(frames: Tensor) -> Tensor:
    """Magnitude spectra [..., n_fft // 2 + 1] of raw frames [..., n_fft]."""
    return complex_spectrum(frames).abs()


def frame_signal(x: Tensor, pad_end: bool = True, framing: Framing = CENTRED) -> Tensor:
    """Frames [T, n_fft] of a mono signal, one per HOP, each window ending ``framing.right`` samples past
    its frame's time (zero padding at the start, and at the end when ``pad_end``), exactly as a stream sees
    them."""
    n = framing.n_fft
    x = torch.nn.functional.pad(x, (framing.left, framing.right if pad_end else 0))
    if x.shape[-1] < n:
        x = torch.nn.functional.pad(x, (0, n - x.shape[-1]))
    return x.unfold(-1, n, HOP)


def batch_spectrum(x: Tensor, framing: Framing = CENTRED) -> Tensor:
    """[..., samples] -> [..., T, bins]."""
    return spectrum(frame_signal(x, framing=framing))


def frame_levels_db(spec: Tensor) -> np.ndarray:
    """Each frame's level in dB (full-scale sine = 0 dB) from magnitude spectra [T, bins] (any framing); the decoders'
    silence gates and training's masks use the same figure."""
    return 10 * np.log10(np.maximum((spec**2).sum(dim=1).numpy() / 2, 1e-12))


class StreamingSTFT:
    """Hop-by-hop complex spectra whose magnitudes equal ``batch_spectrum`` on the concatenated stream (the
    models read magnitudes; the pitch refiner reads phases)."""

    def __init__(self, framing: Framing = CENTRED) -> None:
        self.framing = framing
        self.buf = np.zeros(framing.left, dtype=np.float32)  # the start padding

    def push(self, samples: np.ndarray) -> Tensor:
        """Append samples; return the complex spectra [n, bins] of every frame that is now complete."""
        self.buf = np.concatenate([self.buf, samples.astype(np.float32, copy=False)])
        nf = self.framing.n_fft
        n = 0 if len(self.buf) < nf else 1 + (len(self.buf) - nf) // HOP
        if n == 0:
            return torch.zeros(0, self.framing.n_bins, dtype=torch.complex64)
        frames = torch.from_numpy(self.buf[: (n - 1) * HOP + nf]).unfold(0, nf, HOP)
        out = complex_spectrum(frames)
        self.buf = self.buf[n * HOP:]
        return out

    def flush(self) -> Tensor:
        """Spectra of the frames that need the end padding (end of a file)."""
        return self.push(np.zeros(self.framing.right, dtype=np.float32))


# -- filterbanks --------------------------------------------------------------------------------
def mel_bank(n_mels: int, fmin: float = 30.0, fmax: float = 8000.0, n_fft: int = N_FFT) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] Slaney mel filterbank (librosa's, computed once at export time)."""
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(np.float32)


def logfreq_bank(bins_per_octave: int, n_bins: int, fmin: float = PITCH_FMIN, n_fft: int = N_FFT) -> np.ndarray:
    """[n_bins, n_fft // 2 + 1] triangular filters on a log-frequency axis (a CQT-like bank on the STFT).

    librosa has no STFT-domain log-frequency bank, so we build one: each filter spans its
    neighbours' centres, but never less than one STFT bin, so low bins interpolate the STFT
    rather than fall between its bins. Rows are normalised to unit sum.
    """
    freqs = np.arange(n_fft // 2 + 1) * SAMPLE_RATE / n_fft
    df = SAMPLE_RATE / n_fft
    centres = fmin * 2.0 ** (np.arange(n_bins) / bins_per_octave)
    ratio = 2.0 ** (1.0 / bins_per_octave)
    bank = np.zeros((n_bins, n_fft // 2 + 1), dtype=np.float64)
    for i, fc in enumerate(centres):
        lo = max(fc - fc / ratio, df)
        hi = max(fc * ratio - fc, df)
        w = np.where(freqs < fc, 1 - (fc - freqs) / lo, 1 - (freqs - fc) / hi)
        bank[i] = np.clip(w, 0, None)
        bank[i] /= bank[i].sum() + 1e-12
    return bank.astype(np.float32)


class FeatureBank(nn.Module):
    """A fixed filterbank and log compression: spectra [..., T, bins] -> features [..., F, T].

    Each filter is stored as its non-zero span only (bin indices and weights, K per filter), so a
    bundle carries a few KB instead of an F x 513 matrix, and a frame costs F*K multiply-adds."""

    def __init__(self, matrix: np.ndarray) -> None:
        super().__init__()
        m = np.asarray(matrix, dtype=np.float32)
        nz = [np.flatnonzero(row) for row in m]
        starts = np.array([z[0] if len(z) else 0 for z in nz])
        k = max(1, max((z[-1] - z[0] + 1) if len(z) else 1 for z in nz))
        starts = np.minimum(starts, m.shape[1] - k)
        idx = starts[:, None] + np.arange(k)[None, :]
        self.register_buffer("idx", torch.as_tensor(idx, dtype=torch.long))
        self.register_buffer("weights", torch.as_tensor(np.take_along_axis(m, idx, axis=1)))
        self.eps = LOG_EPS
        self.f = int(idx.shape[0])
        self.k = int(k)

    def forward(self, spec: Tensor) -> Tensor:
        g = spec.index_select(-1, self.idx.flatten())
        shape = list(spec.shape[:-1]) + [self.f, self.k]
        e = (g.reshape(shape) * self.weights).sum(-1)
        return torch.log(e + self.eps).transpose(-1, -2)

    @property
    def n_features(self) -> int:
        return self.f


def bank_for(spec: dict, shift_margin: int = 0) -> np.ndarray:
    """The filterbank of a feature spec (on its framing's bins); ``shift_margin`` extra log bins on each side
    (training)."""
    n_fft = Framing.of(spec).n_fft
    if spec["kind"] == "mel":
        return mel_bank(spec["n_mels"], n_fft=n_fft)
    bpo = spec["bins_per_octave"]
    fmin = spec["fmin"] * 2.0 ** (-shift_margin / bpo)
    return logfreq_bank(bpo, spec["n_bins"] + 2 * shift_margin, fmin, n_fft)
