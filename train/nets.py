"""The five task networks: one frame-synchronous family, configured per task.

Every net maps features [B, F, T] to per-frame outputs [B, C, T - rf + 1] with valid
convolutions in time, so a stream can run it on blocks with ``rf - 1`` frames of context and
get exactly the batch outputs. Output frame j belongs to input frame ``j + rf - 1 - lookahead``.

Look-ahead is in frames past the labelled frame. The audio a net sees ends ``reach + 10 * lookahead`` ms
after the labelled time, where ``reach`` is how far its framing's window reaches past its frame
(edgemir.frontend): 32 ms centred (pitch, chords, drums, instruments; a negative look-ahead decides before the
frame's window is complete, -3 is the least), 7.5 ms causal (onsets at +1: 17.5 ms). See docs/live-design.md.

Layout (each weighted layer followed by BatchNorm, for the batchnorm trimming criterion):
  input BatchNorm → Conv2d blocks over (frequency, time) with frequency max-pooling
  → flatten → Conv1d blocks over time → optional causal GRU → per-frame dense blocks → head.

Salience variant (pitch): the input is stacked at harmonic offsets (the harmonic CQT of Bittner
et al.'s deep salience), Conv2d blocks keep the frequency axis (no pooling, frequency-equivariant:
every frame trains every bin), and a 1x1 Conv2d head gives one logit per bin; the voicing logit is
the maximum salience logit (CREPE's confidence). Far fewer frames are needed than with a dense head
that must learn each 20-cent bin separately.
"""

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import List  # noqa: UP035 (TorchScript needs typing.List)

import torch
from torch import Tensor, nn

from edgemir.frontend import CENTRED, Framing
from edgemir.labels import CHORDS, DRUM_CLASSES, FAMILIES, PITCH_BINS
from edgemir.tasks import REGISTRY


@dataclass
class NetConfig:
    n_features: int
    n_out: int
    conv2d: list[tuple[int, int, int, int]] = field(default_factory=list)  # (ch, kf, kt, pool_f)
    conv1d: list[tuple[int, int]] = field(default_factory=list)  # (ch, kt)
    gru: int = 0
    dense: list[int] = field(default_factory=list)
    lookahead: int = 0
    shifts: list[int] = field(default_factory=list)  # salience variant: input bin offset per harmonic
    out_bins: int = 0  # salience variant: bins of the output axis (input bin k = output bin k)
    # the framing of the spectra it reads (edgemir.frontend.Framing); cards before framings were centred
    n_fft: int = CENTRED.n_fft
    right: int = CENTRED.right

    @property
    def receptive_field(self) -> int:
        return 1 + sum(kt - 1 for _, _, kt, _ in self.conv2d) + sum(kt - 1 for _, kt in self.conv1d)


def n_features(task: str) -> int:
    s = REGISTRY[task].features
    return s["n_mels"] if s["kind"] == "mel" else s["n_bins"]


# HCQT harmonics (Bittner et al. 2017) plus the sub-harmonics 1/3 and 2/3: a candidate at 3 f0 then sees
# the energy at f0 and 2 f0 that marks it as a harmonic (the 3rd harmonic was the commonest error)
PITCH_HARMONICS = (1 / 3, 0.5, 2 / 3, 1, 2, 3, 4, 5)


def harmonic_shifts(bins_per_octave: int, harmonics=PITCH_HARMONICS) -> list[int]:
    return [int(round(bins_per_octave * math.log2(h))) for h in harmonics]


# The dense baseline of each task (sizes follow the paper's model families); w scales a width, f is the
# number of input features.
ARCHITECTURES: dict[str, Callable[[Callable[[int], int], int], NetConfig]] = {
    # harmonic-stacked salience CNN on the 20-cent log-frequency axis
    "pitch": lambda w, f: NetConfig(f, PITCH_BINS + 1, conv2d=[(w(32), 7, 3, 1), (w(32), 5, 3, 1), (w(16), 3, 1, 1)],
                                    shifts=harmonic_shifts(REGISTRY["pitch"].features["bins_per_octave"]),
                                    out_bins=PITCH_BINS, lookahead=-1),
    # Schlüter & Böck onset CNN
    "onset": lambda w, f: NetConfig(f, 1, conv2d=[(w(16), 7, 3, 3), (w(32), 3, 3, 3)], conv1d=[(w(256), 7)],
                                    dense=[w(128)], lookahead=1),
    # the onset CNN with a causal GRU on top (CRNN)
    "drums": lambda w, f: NetConfig(f, len(DRUM_CLASSES), conv2d=[(w(16), 7, 3, 3), (w(32), 3, 3, 3)],
                                    conv1d=[(w(256), 7)], gru=w(96), dense=[w(128)], lookahead=3),
    # Carsault et al.'s ConvNet on log-frequency context
    "chord": lambda w, f: NetConfig(f, len(CHORDS), conv2d=[(w(16), 5, 5, 2), (w(32), 3, 5, 2)], conv1d=[(w(256), 5)],
                                    dense=[w(128)], lookahead=6),
    # a CRNN: the causal GRU gathers timbre evidence over the whole note
    "instrument": lambda w, f: NetConfig(f, len(FAMILIES), conv2d=[(w(16), 3, 3, 2), (w(32), 3, 3, 2)],
                                         conv1d=[(w(256), 5)], gru=w(96), dense=[w(128)], lookahead=4),
}


def task_config(task: str, width: float = 1.0) -> NetConfig:
    """The dense baseline of a task at ``width`` times its channels (at least 4 per layer), on the framing
    of its feature spec."""
    cfg = ARCHITECTURES[task](lambda c: max(4, int(round(c * width))), n_features(task))
    fr = Framing.of(REGISTRY[task].features)
    cfg.n_fft, cfg.right = fr.n_fft, fr.right
    return cfg


SALIENCE_PRIOR_LOGIT = -4.7  # log(p / (1 - p)) for p = 25 * sqrt(2 pi) / 20 / 360


class NoRecurrence(nn.Module):
    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return x, h


class GRUStage(nn.Module):
    """A causal GRU over time on [B, C, T]; the hidden state carries across stream blocks."""

    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(n_in, hidden, batch_first=True)

    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        if h.numel() == 0:
            h = torch.zeros(1, x.shape[0], self.gru.hidden_size)
        y, h = self.gru(x.transpose(1, 2), h)
        return y.transpose(1, 2), h


class FrameNet(nn.Module):
    pools: List[int]  # noqa: UP006 (TorchScript needs typing.List)
    shifts: List[int]  # noqa: UP006
    rows2d: List[int]  # noqa: UP006 (frequency rows at each Conv2d's input)

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg_dict = asdict(cfg)
        self.n_out = cfg.n_out
        self.receptive_field = cfg.receptive_field
        self.lookahead = cfg.lookahead
        self.inorm = nn.BatchNorm1d(cfg.n_features)
        self.conv2d = nn.ModuleList()
        self.bn2d = nn.ModuleList()
        self.pools: list[int] = []
        self.shifts = list(cfg.shifts)
        self.out_bins = cfg.out_bins
        self.salience = bool(cfg.shifts)
        ch, fr = (len(cfg.shifts), cfg.out_bins) if self.salience else (1, cfg.n_features)
        self.rows2d = []
        for c, kf, kt, pool in cfg.conv2d:
            self.rows2d.append(fr)
            self.conv2d.append(nn.Conv2d(ch, c, (kf, kt), padding=(kf // 2, 0)))
            self.bn2d.append(nn.BatchNorm2d(c))
            self.pools.append(pool)
            ch, fr = c, fr // pool
        # frequency rows per 2-D channel after pooling (1 for salience: the head is per bin)
        self.freq_out = 1 if self.salience else fr
        n = ch * fr
        self.conv1d = nn.ModuleList()
        self.bn1d = nn.ModuleList()
        for c, kt in cfg.conv1d:
            self.conv1d.append(nn.Conv1d(n, c, kt))
            self.bn1d.append(nn.BatchNorm1d(c))
            n = c
        if cfg.gru:
            self.rnn: nn.Module = GRUStage(n, cfg.gru)
            n = cfg.gru
        else:
            self.rnn = NoRecurrence()
        self.dense = nn.ModuleList()
        self.bnd = nn.ModuleList()
        for c in cfg.dense:
            self.dense.append(nn.Linear(n, c))
            self.bnd.append(nn.BatchNorm1d(c))
            n = c
        if self.salience:
            assert not cfg.conv1d and not cfg.dense and not cfg.gru, "salience nets are 2-D only"
            assert cfg.n_out == cfg.out_bins + 1
            self.head: nn.Module = nn.Conv2d(ch, 1, 1)
            # start at the prior of a salience bin (~3 of 360 bins lit per voiced frame): with a zero bias,
            # Adam spends thousands of steps walking it to -5 before the peak can emerge
            nn.init.constant_(self.head.bias, SALIENCE_PRIOR_LOGIT)
        else:
            self.head = nn.Linear(n, cfg.n_out)

    def harmonic_stack(self, x: Tensor) -> Tensor:
        """[B, F, T] -> [B, H, out_bins, T]: channel i reads bin k + shift_i (zero outside)."""
        lo = max(0, -min(self.shifts))
        hi = max(0, max(self.shifts) + self.out_bins - x.shape[1])
        xp = nn.functional.pad(x, (0, 0, lo, hi))
        return torch.stack([xp[:, lo + s: lo + s + self.out_bins] for s in self.shifts], 1)

    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        x = self.inorm(x)
        if self.salience:
            z = self.harmonic_stack(x)
            for conv, bn in zip(self.conv2d, self.bn2d):
                z = torch.relu(bn(conv(z)))
            sal = self.head(z).squeeze(1)
            return torch.cat([sal, sal.max(1, keepdim=True)[0]], 1), h
        if len(self.conv2d) > 0:
            z = x.unsqueeze(1)
            for i, (conv, bn) in enumerate(zip(self.conv2d, self.bn2d)):
                z = torch.relu(bn(conv(z)))
                p = self.pools[i]
                if p > 1:
                    z = nn.functional.max_pool2d(z, (p, 1))
            x = z.flatten(1, 2)
        for conv, bn in zip(self.conv1d, self.bn1d):
            x = torch.relu(bn(conv(x)))
        x, h = self.rnn(x, h)
        for lin, bn in zip(self.dense, self.bnd):
            x = torch.relu(bn(lin(x.transpose(1, 2)).transpose(1, 2)))
        return self.head(x.transpose(1, 2)).transpose(1, 2), h


    # -- incremental inference: each temporal convolution keeps its last kt - 1 input frames --------------
    @torch.jit.export
    def initial_caches(self) -> List[Tensor]:  # noqa: UP006
        """Empty per-layer caches (no frames yet): one per Conv2d ([1, C, 0, F], time-major), then one per Conv1d."""
        out: List[Tensor] = []  # noqa: UP006
        i = 0
        for conv in self.conv2d:
            out.append(torch.zeros(1, conv.weight.shape[1], 0, self.rows2d[i]))
            i += 1
        for conv in self.conv1d:
            out.append(torch.zeros(1, conv.weight.shape[1], 0))
        return out

    @torch.jit.export
    def stream(self, x: Tensor, h: Tensor, caches: List[Tensor]) -> tuple[Tensor, Tensor, List[Tensor]]:  # noqa: UP006
        """New feature frames [1, F, B] -> the output frames they complete [1, C, B'] (B' = B once the
        receptive field is full), with each layer's cached context: a stream of any block sizes gives
        exactly ``forward`` on the whole sequence, at the cost of the new frames only."""
        new: List[Tensor] = []  # noqa: UP006
        x = self.inorm(x)
        z = self.harmonic_stack(x) if self.salience else x.unsqueeze(1)
        # the 2-D stage runs time-major, [1, C, T, F]: with frequency as the long last axis, CPU convolutions
        # of a few frames are 3-6x faster than over [1, C, F, T] (same weights, transposed; the same sums)
        z = z.transpose(2, 3)
        # and, for the salience stack (375 bins), channels-last on long blocks (offline analysis): 1.5x faster
        # from ~50 frames, 2x slower on a few; the narrower nets lose 10-25% with it at any length
        channels_last = self.salience and z.shape[2] >= 48
        i = 0
        for conv, bn in zip(self.conv2d, self.bn2d):
            z = torch.cat([caches[i], z], 2)
            if channels_last:
                z = z.contiguous(memory_format=torch.channels_last)
            kf, kt = conv.weight.shape[2], conv.weight.shape[3]
            t = z.shape[2]
            new.append(z[:, :, max(0, t - (kt - 1)):])
            if t >= kt:
                z = torch.relu(bn(nn.functional.conv2d(z, conv.weight.transpose(2, 3), conv.bias, 1, (0, kf // 2))))
                if self.pools[i] > 1:
                    z = nn.functional.max_pool2d(z, (1, self.pools[i]))
            else:
                z = torch.zeros(1, conv.weight.shape[0], 0, self.rows2d[i] // self.pools[i])
            i += 1
        if self.salience:
            if z.shape[2] == 0:
                return torch.zeros(1, self.n_out, 0), h, new
            sal = self.head(z).squeeze(1).transpose(1, 2)
            return torch.cat([sal, sal.max(1, keepdim=True)[0]], 1), h, new
        if len(self.conv2d) > 0:
            x = z.transpose(2, 3).flatten(1, 2)
        for conv, bn in zip(self.conv1d, self.bn1d):
            x = torch.cat([caches[i], x], 2)
            kt = conv.weight.shape[2]
            t = x.shape[2]
            new.append(x[:, :, max(0, t - (kt - 1)):])
            if t >= kt:
                x = torch.relu(bn(conv(x)))
            else:
                x = torch.zeros(1, conv.weight.shape[0], 0)
            i += 1
        if x.shape[2] == 0:
            return torch.zeros(1, self.n_out, 0), h, new
        x, h = self.rnn(x, h)
        for lin, bn in zip(self.dense, self.bnd):
            x = torch.relu(bn(lin(x.transpose(1, 2)).transpose(1, 2)))
        return self.head(x.transpose(1, 2)).transpose(1, 2), h, new


def net_framing(net: nn.Module) -> Framing:
    """The framing a built net reads (its config's)."""
    return Framing(int(net.cfg_dict.get("n_fft", CENTRED.n_fft)), int(net.cfg_dict.get("right", CENTRED.right)))


def build(task: str, width: float = 1.0, lookahead: int | None = None, framing: Framing | None = None) -> FrameNet:
    """The task's net; ``lookahead`` and ``framing`` override its spec's (the latency trade-off study, and
    parents trained before a task changed framing)."""
    cfg = task_config(task, width)
    if lookahead is not None:
        cfg.lookahead = lookahead
    if framing is not None:
        cfg.n_fft, cfg.right = framing.n_fft, framing.right
    return FrameNet(cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    """Parameters that are not zero (a masked network keeps its dense shape)."""
    return int(sum(int((p != 0).sum()) for p in model.parameters()))
