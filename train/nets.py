"""The five task networks: one frame-synchronous family, configured per task.

Every net maps features [B, F, T] to per-frame outputs [B, C, T - rf + 1] with valid
convolutions in time, so a stream can run it on blocks with ``rf - 1`` frames of context and
get exactly the batch outputs. Output frame j belongs to input frame ``j + rf - 1 - lookahead``.

Layout (each weighted layer followed by BatchNorm, for the batchnorm trimming criterion):
  input BatchNorm → Conv2d blocks over (frequency, time) with frequency max-pooling
  → flatten → Conv1d blocks over time → optional causal GRU → per-frame dense blocks → head.
"""


from dataclasses import asdict, dataclass, field
from typing import List  # noqa: UP035 (TorchScript needs typing.List)

import torch
from torch import Tensor, nn

from edgemir.frontend import FEATURE_SPECS
from edgemir.labels import CHORDS, DRUM_CLASSES, FAMILIES, PITCH_BINS


@dataclass
class NetConfig:
    n_features: int
    n_out: int
    conv2d: list[tuple[int, int, int, int]] = field(default_factory=list)  # (ch, kf, kt, pool_f)
    conv1d: list[tuple[int, int]] = field(default_factory=list)  # (ch, kt)
    gru: int = 0
    dense: list[int] = field(default_factory=list)
    lookahead: int = 0

    @property
    def receptive_field(self) -> int:
        return 1 + sum(kt - 1 for _, _, kt, _ in self.conv2d) + sum(kt - 1 for _, kt in self.conv1d)


def n_features(task: str) -> int:
    s = FEATURE_SPECS[task]
    return s["n_mels"] if s["kind"] == "mel" else s["n_bins"]


def task_config(task: str, width: float = 1.0) -> NetConfig:
    """The dense baseline of each task (sizes follow the paper's model families)."""
    w = lambda c: max(4, int(round(c * width)))  # noqa: E731
    f = n_features(task)
    if task == "pitch":  # CREPE-sized salience net on the 20-cent log-frequency axis
        return NetConfig(f, PITCH_BINS + 1, conv2d=[(w(8), 5, 3, 2)], conv1d=[(w(256), 3), (w(256), 3)],
                         dense=[w(256)], lookahead=2)
    if task == "onset":  # Schlüter & Böck onset CNN
        return NetConfig(f, 1, conv2d=[(w(16), 7, 3, 3), (w(32), 3, 3, 3)], conv1d=[(w(256), 7)],
                         dense=[w(128)], lookahead=3)
    if task == "drums":  # the onset CNN with a causal GRU on top (CRNN)
        return NetConfig(f, len(DRUM_CLASSES), conv2d=[(w(16), 7, 3, 3), (w(32), 3, 3, 3)],
                         conv1d=[(w(256), 7)], gru=w(96), dense=[w(128)], lookahead=3)
    if task == "chord":  # Carsault et al.'s ConvNet on log-frequency context
        return NetConfig(f, len(CHORDS), conv2d=[(w(16), 5, 5, 2), (w(32), 3, 5, 2)], conv1d=[(w(256), 5)],
                         dense=[w(128)], lookahead=6)
    if task == "instrument":
        return NetConfig(f, len(FAMILIES), conv2d=[(w(16), 3, 3, 2), (w(32), 3, 3, 2)], conv1d=[(w(256), 5)],
                         dense=[w(128)], lookahead=4)
    raise ValueError(task)


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

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg_dict = asdict(cfg)
        self.receptive_field = cfg.receptive_field
        self.lookahead = cfg.lookahead
        self.inorm = nn.BatchNorm1d(cfg.n_features)
        self.conv2d = nn.ModuleList()
        self.bn2d = nn.ModuleList()
        self.pools: list[int] = []
        ch, fr = 1, cfg.n_features
        for c, kf, kt, pool in cfg.conv2d:
            self.conv2d.append(nn.Conv2d(ch, c, (kf, kt), padding=(kf // 2, 0)))
            self.bn2d.append(nn.BatchNorm2d(c))
            self.pools.append(pool)
            ch, fr = c, fr // pool
        self.freq_out = fr  # frequency rows per 2-D channel after pooling
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
        self.head = nn.Linear(n, cfg.n_out)

    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        x = self.inorm(x)
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


def build(task: str, width: float = 1.0) -> FrameNet:
    return FrameNet(task_config(task, width))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
