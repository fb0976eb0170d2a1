"""The shared front-end: one STFT per 10 ms hop, then per-task fixed filterbanks and log.

The same functions run in batch (training, offline analysis) and hop by hop (live). Frame ``t`` is
centred on sample ``t * HOP``: a stream starts with ``N_FFT // 2`` zeros, so frame ``t`` can be
computed once sample ``t * HOP + N_FFT // 2`` has arrived (a 32 ms look-ahead of the window).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from edgemir.labels import HOP, PITCH_FMIN, SAMPLE_RATE

N_FFT: int = 1024
N_BINS: int = N_FFT // 2 + 1
LOG_EPS: float = 1e-5
_WINDOW = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64).float()
_SCALE = 2.0 / float(_WINDOW.sum())  # a full-scale sine gives a peak magnitude of ~1

FRONTEND_CARD = {"sample_rate": SAMPLE_RATE, "hop": HOP, "n_fft": N_FFT, "window": "hann", "center_pad": N_FFT // 2}


def complex_spectrum(frames: Tensor) -> Tensor:
    """Complex spectra [..., N_BINS] of raw frames [..., N_FFT] (scaled as ``spectrum``)."""
    return torch.fft.rfft(frames * _WINDOW, dim=-1) * _SCALE


def spectrum(frames: Tensor) -> Tensor:
    """Magnitude spectra [..., N_BINS] of raw frames [..., N_FFT]."""
    return complex_spectrum(frames).abs()


def frame_signal(x: Tensor, pad_end: bool = True) -> Tensor:
    """Frames [T, N_FFT] of a mono signal, centred on multiples of HOP (zero padding at the start,
    and at the end when ``pad_end``), exactly as a stream sees them."""
    x = torch.nn.functional.pad(x, (N_FFT // 2, N_FFT // 2 if pad_end else 0))
    if x.shape[-1] < N_FFT:
        x = torch.nn.functional.pad(x, (0, N_FFT - x.shape[-1]))
    return x.unfold(-1, N_FFT, HOP)


def batch_spectrum(x: Tensor) -> Tensor:
    """[..., samples] -> [..., T, N_BINS]."""
    return spectrum(frame_signal(x))


def frame_levels_db(spec: Tensor) -> np.ndarray:
    """Each frame's level in dB (full-scale sine = 0 dB) from magnitude spectra [T, N_BINS]; the decoders'
    silence gates and training's masks use the same figure."""
    return 10 * np.log10(np.maximum((spec**2).sum(dim=1).numpy() / 2, 1e-12))


class StreamingSTFT:
    """Hop-by-hop complex spectra whose magnitudes equal ``batch_spectrum`` on the concatenated stream (the
    models read magnitudes; the pitch refiner reads phases)."""

    def __init__(self) -> None:
        self.buf = np.zeros(N_FFT // 2, dtype=np.float32)  # the start padding

    def push(self, samples: np.ndarray) -> Tensor:
        """Append samples; return the complex spectra [n, N_BINS] of every frame that is now complete."""
        self.buf = np.concatenate([self.buf, samples.astype(np.float32, copy=False)])
        n = 0 if len(self.buf) < N_FFT else 1 + (len(self.buf) - N_FFT) // HOP
        if n == 0:
            return torch.zeros(0, N_BINS, dtype=torch.complex64)
        frames = torch.from_numpy(self.buf[: (n - 1) * HOP + N_FFT]).unfold(0, N_FFT, HOP)
        out = complex_spectrum(frames)
        self.buf = self.buf[n * HOP:]
        return out

    def flush(self) -> Tensor:
        """Spectra of the frames that need the end padding (end of a file)."""
        return self.push(np.zeros(N_FFT // 2, dtype=np.float32))


# -- filterbanks --------------------------------------------------------------------------------
def mel_bank(n_mels: int, fmin: float = 30.0, fmax: float = 8000.0) -> np.ndarray:
    """[n_mels, N_BINS] Slaney mel filterbank (librosa's, computed once at export time)."""
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(np.float32)


def logfreq_bank(bins_per_octave: int, n_bins: int, fmin: float = PITCH_FMIN) -> np.ndarray:
    """[n_bins, N_BINS] triangular filters on a log-frequency axis (a CQT-like bank on the STFT).

    librosa has no STFT-domain log-frequency bank, so we build one: each filter spans its
    neighbours' centres, but never less than one STFT bin, so low bins interpolate the STFT
    rather than fall between its bins. Rows are normalised to unit sum.
    """
    freqs = np.arange(N_BINS) * SAMPLE_RATE / N_FFT
    df = SAMPLE_RATE / N_FFT
    centres = fmin * 2.0 ** (np.arange(n_bins) / bins_per_octave)
    ratio = 2.0 ** (1.0 / bins_per_octave)
    bank = np.zeros((n_bins, N_BINS), dtype=np.float64)
    for i, fc in enumerate(centres):
        lo = max(fc - fc / ratio, df)
        hi = max(fc * ratio - fc, df)
        w = np.where(freqs < fc, 1 - (fc - freqs) / lo, 1 - (freqs - fc) / hi)
        bank[i] = np.clip(w, 0, None)
        bank[i] /= bank[i].sum() + 1e-12
    return bank.astype(np.float32)


class FeatureBank(nn.Module):
    """A fixed filterbank and log compression: spectra [..., T, N_BINS] -> features [..., F, T].

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
    """The filterbank of a feature spec; ``shift_margin`` extra log bins on each side (training)."""
    if spec["kind"] == "mel":
        return mel_bank(spec["n_mels"])
    bpo = spec["bins_per_octave"]
    fmin = spec["fmin"] * 2.0 ** (-shift_margin / bpo)
    return logfreq_bank(bpo, spec["n_bins"] + 2 * shift_margin, fmin)
