"""Training data: spectra computed once with the device's front-end, frame targets, batches with
spectral-domain augmentation (gain, EQ, noise; pitch shift by log-frequency crop or mel-bank warp)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgemir.audio_io import read_audio  # the device's reader: one code path for audio in
from edgemir.frontend import FeatureBank, Framing, bank_for, batch_spectrum, frame_levels_db
from edgemir.labels import FRAME_RATE, PITCH_BINS, hz_to_cents
from edgemir.tasks import REGISTRY
from train import annotations as ann

IGNORE = -100
# mel tasks whose labels survive a pitch shift: the largest shift in semitones (half-semitone steps)
MEL_SHIFT = {"instrument": 2.0}


@dataclass
class Item:
    name: str
    spec: torch.Tensor  # [T, bins] float16, on the task's framing
    target: np.ndarray  # task-specific per-frame targets [T, ...]
    levels: np.ndarray  # per-frame level in dB
    audio_path: Path


def _spread(y: np.ndarray, k: int, times) -> None:
    """Event targets: 1 on the event's frame, 0.5 on its neighbours (target widening)."""
    n = len(y)
    for t in times:
        i = int(round(t * FRAME_RATE))
        for d, v in ((-1, 0.5), (1, 0.5), (0, 1.0)):
            if 0 <= i + d < n:
                y[i + d, k] = max(y[i + d, k], v)


def frame_targets(task: str, path: Path, n: int) -> np.ndarray:
    """Per-frame targets by the task's format: cents (NaN unvoiced), per-class event flags, class indices."""
    spec = REGISTRY[task]
    if spec.format == "f0":
        t, f = ann.read_f0(path)
        idx = np.clip(np.round(t * FRAME_RATE).astype(int), 0, None)
        cents = np.full(n, np.nan, dtype=np.float32)
        ok = (idx < n) & (f > 0)
        cents[idx[ok]] = [hz_to_cents(v) for v in f[ok]]
        return cents
    if spec.format in ("times", "events"):
        y = np.zeros((n, len(spec.classes)), np.float32)
        ref = ann.read_annotation(task, path)
        for k, c in enumerate(spec.classes):
            _spread(y, k, ref if spec.format == "times" else ref[c])
        return y
    if spec.format == "segments":
        iv, labs = ann.read_lab(path, spec.classes)
        y = np.zeros(n, np.int64)
        t = np.arange(n) / FRAME_RATE
        for (a, b), lab in zip(iv, labs):
            y[(t >= a) & (t < b)] = spec.classes.index(lab)
        return y
    return np.full(n, spec.classes.index(ann.read_label(path, spec.classes)), np.int64)


def training_data(root: Path | str) -> dict:
    """What a run trained on, from the manifests ``train data`` wrote in ``root``/train, valid and test: per
    split the generator version, minutes, seed and SoundFonts (a bundle's card records it)."""
    root = Path(root)
    out: dict = {"folder": str(root)}
    for split in ("train", "valid", "test"):
        m = root / split / "manifest.json"
        if m.is_file():
            man = json.loads(m.read_text())
            out[split] = {k: man.get(k) for k in ("generator_version", "minutes", "seed", "soundfonts")}
    return out


def load_split(task: str, folder: Path, limit: int | None = None, framing: Framing | None = None) -> list[Item]:
    """Items with spectra on ``framing`` (the task spec's by default; evaluation reads the audio anew
    through the engine, on each bundle's own framing)."""
    framing = framing or Framing.of(REGISTRY[task].features)
    names = ann.list_items(task, folder)[:limit]
    items = []
    for nme in names:
        wav = Path(folder) / f"{nme}.wav"
        x = read_audio(wav)
        spec = batch_spectrum(torch.from_numpy(x), framing)
        lv = frame_levels_db(spec)
        tg = frame_targets(task, Path(folder) / (nme + REGISTRY[task].suffix), spec.shape[0])
        items.append(Item(nme, spec.half(), tg, lv, wav))
    return items


CROP_FRAMES = {"pitch": 25}


class Batcher:
    """Random crops of ``length`` output frames with their context, augmented in the spectral domain."""

    def __init__(self, task: str, items: list[Item], rf: int, la: int, length: int | None = None,
                 augment: bool = True, seed: int = 0) -> None:
        # pitch is frame-local and its salience net costs per bin: short crops, more of them
        length = length or CROP_FRAMES.get(task, 100)
        self.task, self.items, self.rf, self.la, self.length = task, items, rf, la, length
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        # the bank on the items' framing (the net's: a parent trained before its task changed framing keeps it)
        self.n_bins = int(items[0].spec.shape[1]) if items else Framing.of(REGISTRY[task].features).n_bins
        spec = {**REGISTRY[task].features, "n_fft": 2 * (self.n_bins - 1)}
        # log-frequency tasks get a margin for pitch shifting (2 bins/semitone chord, 5 pitch)
        self.margin = {"pitch": 30, "chord": 12}.get(task, 0)
        self.step = 0 if spec["kind"] == "mel" else spec["bins_per_octave"] // 12
        full = bank_for(spec, self.margin)
        self.n_feat = full.shape[0] - 2 * self.margin
        # the device's FeatureBank (key 0) and the bank of every pitch shift that augmentation uses:
        # log-frequency tasks crop the wider bank (key = bins); mel tasks warp it (key = half-semitones)
        if self.step:
            self.banks = {s: FeatureBank(full[self.margin + s: self.margin + s + self.n_feat])
                          for s in range(-self.margin, self.margin + 1, self.step)}
        else:
            k = int(2 * MEL_SHIFT.get(task, 0.0))
            self.banks = {s: FeatureBank(warp_bank(full, 2.0 ** (s / 24))) for s in range(-k, k + 1)}
        self.shifts = list(self.banks)
        self.weights = np.array([len(it.levels) for it in items], dtype=float)
        self.weights /= self.weights.sum()

    def features(self, spec: torch.Tensor, shift: int = 0) -> torch.Tensor:
        """[B, T, bins] -> [B, F, T] through the bank of pitch shift ``shift`` (the device's bank at 0)."""
        return self.banks[shift](spec)

    def crop(self, it: Item, start: int, n_out: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        left = self.rf - 1 - self.la
        a, b = start - left, start + n_out + self.la
        T = it.spec.shape[0]
        spec = torch.zeros(b - a, self.n_bins)
        lo, hi = max(a, 0), min(b, T)
        spec[lo - a: hi - a] = it.spec[lo:hi].float()
        tg = it.target[start: start + n_out]
        lv = it.levels[start: start + n_out]
        return spec, tg, lv

    def sample(self, batch: int):
        specs, tgs, lvs = [], [], []
        for _ in range(batch):
            it = self.items[self.rng.choice(len(self.items), p=self.weights)]
            T = it.spec.shape[0]
            s = int(self.rng.integers(0, max(1, T - self.length)))
            n = min(self.length, T - s)
            spec, tg, lv = self.crop(it, s, self.length)
            if n < self.length:  # pad targets of a short item
                tg = np.concatenate([tg, np.repeat(self._pad_target(tg), self.length - n, axis=0)])
                lv = np.concatenate([lv, np.full(self.length - n, -120.0)])
            specs.append(spec)
            tgs.append(tg)
            lvs.append(lv)
        spec = torch.stack(specs)
        shift = 0
        if self.augment:
            spec = self._augment(spec)
            if len(self.shifts) > 1:
                shift = self.shifts[int(self.rng.integers(len(self.shifts)))]
        feats = self.features(spec, shift)
        return feats, self._targets(np.stack(tgs), np.stack(lvs), shift)

    def _pad_target(self, tg):
        fmt = REGISTRY[self.task].format
        if fmt == "f0":
            return np.full((1,), np.nan, np.float32)
        if fmt in ("times", "events"):
            return np.zeros((1, tg.shape[1]), np.float32)
        return np.full((1,), IGNORE if fmt == "label" else 0, np.int64)  # segments: padding is "N"

    def _augment(self, spec: torch.Tensor) -> torch.Tensor:
        B = spec.shape[0]
        rng = self.rng
        gain = torch.from_numpy(10 ** (rng.uniform(-18, 6, (B, 1, 1)) / 20)).float()
        # EQ: a smooth random curve of ±6 dB over log frequency
        f = np.log2(np.arange(spec.shape[-1]) + 1.0)
        pts = rng.uniform(-6, 6, (B, 5))
        curve = np.stack([np.interp(f, np.linspace(0, f[-1], 5), p) for p in pts])
        eq = torch.from_numpy(10 ** (curve / 20)).float().unsqueeze(1)
        spec = spec * gain * eq
        noisy = rng.random(B) < 0.3
        if noisy.any():
            rms = spec.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
            snr = torch.from_numpy(rng.uniform(10, 40, (B, 1, 1))).float()
            n = torch.from_numpy(rng.rayleigh(1.0, spec.shape)).float() * rms * 10 ** (-snr / 20)
            mask = torch.from_numpy(noisy).view(B, 1, 1)
            spec = torch.where(mask, torch.sqrt(spec**2 + n**2), spec)
        return spec

    def _targets(self, tg: np.ndarray, lv: np.ndarray, shift: int):
        fmt = REGISTRY[self.task].format
        if fmt == "f0":
            # shifting the crop up by k bins moves every pitch down k bins on the salience axis
            cents = torch.from_numpy(tg).float() - shift * 20.0
            return cents
        if fmt == "segments":  # the vocabulary's root rotates with a pitch shift: N, 12 majors, 12 minors
            y = torch.from_numpy(tg)
            semis = shift // self.step if self.step else 0
            if semis:
                rot = y.clone()
                m = y > 0
                q = (y[m] - 1) // 12
                r = (y[m] - 1) % 12
                rot[m] = 1 + q * 12 + (r - semis) % 12
                y = rot
            return y
        if fmt == "label":  # silent frames carry no label
            y = torch.from_numpy(tg).clone()
            y[torch.from_numpy(lv < -60)] = IGNORE
            return y
        return torch.from_numpy(tg)


def warp_bank(bank: np.ndarray, ratio: float) -> np.ndarray:
    """The bank that gives, on a spectrum, the features of that spectrum pitch-shifted by ``ratio``.

    A partial at f moves to ratio*f, so filter m must weigh bin f with its old weight at ratio*f.
    Sinusoid heights are kept (no 1/ratio density factor): a shifted note keeps its level.
    """
    if ratio == 1.0:
        return bank
    grid = np.arange(bank.shape[1], dtype=np.float64)
    return np.stack([np.interp(grid * ratio, grid, row, right=0.0) for row in bank]).astype(np.float32)


def pitch_salience_target(cents: torch.Tensor, sigma: float = 25.0) -> tuple[torch.Tensor, torch.Tensor]:
    """CREPE-style Gaussian-blurred salience [B, PITCH_BINS, T] and voicing [B, T] from cents above C1."""
    voiced = ~torch.isnan(cents)
    c = torch.nan_to_num(cents, nan=-1e4)
    axis = torch.arange(PITCH_BINS).float() * 20.0
    sal = torch.exp(-((axis.view(1, -1, 1) - c.unsqueeze(1)) ** 2) / (2 * sigma**2))
    return sal * voiced.unsqueeze(1), voiced.float()


