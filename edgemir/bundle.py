"""Bundles: the only contract between ``train/`` and the device.

A bundle is a TorchScript file holding a ``TaskModel`` (filterbank + network + output
activation) with a JSON card in its extra files. Loading checks the format version, the
front-end parameters, the sha256 of the weights and the sha256 of the card (which holds the
weights' one, so the two seal the whole bundle) before anything runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import List  # noqa: UP035 (TorchScript needs typing.List)

import torch
from torch import Tensor, nn

from edgemir.errors import UserError
from edgemir.frontend import CENTRED, FeatureBank, Framing
from edgemir.labels import TASKS

# 3: ``step`` (incremental inference); 2: the card sealed by card_sha256; 1: only the weights sealed
FORMAT_VERSION = 3
CARD_NAME = "card.json"
SUFFIX = ".ts"


class TaskModel(nn.Module):
    """What a bundle runs: ``features`` (spectra [T, bins] -> [F, T]), ``forward`` (features
    [1, F, T] + recurrent state -> probabilities [1, C, T - rf + 1] + state: batch, training,
    evaluation) and ``step`` (new spectra [B, bins] + stream state -> the probabilities of the
    frames they complete: the engine's incremental path, each layer caching its own context)."""

    def __init__(self, bank: FeatureBank, net: nn.Module, activation: str, state_size: int = 0) -> None:
        super().__init__()
        self.bank = bank
        self.net = net
        self.activation = activation
        self.state_size = state_size

    @torch.jit.export
    def features(self, spec: Tensor) -> Tensor:
        return self.bank(spec)

    @torch.jit.export
    def initial_state(self) -> Tensor:
        if self.state_size > 0:
            return torch.zeros(1, 1, self.state_size)
        return torch.zeros(0)

    def activate(self, y: Tensor) -> Tensor:
        if self.activation == "softmax":
            return torch.softmax(y, dim=1)
        if self.activation == "sigmoid":
            return torch.sigmoid(y)
        return y

    def forward(self, feats: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        y, state = self.net(feats, state)
        return self.activate(y), state

    @torch.jit.export
    def initial_stream(self) -> List[Tensor]:  # noqa: UP006 (TorchScript)
        return [self.initial_state()] + self.net.initial_caches()

    @torch.jit.export
    def step(self, spec: Tensor, state: List[Tensor]) -> tuple[Tensor, List[Tensor]]:  # noqa: UP006
        y, h, caches = self.net.stream(self.bank(spec).unsqueeze(0), state[0], state[1:])
        return self.activate(y), [h] + caches


_FROZEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def frozen_for_device(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """The module as the engine runs it: parameters become constants and BatchNorm folds into the
    convolutions, which cuts the per-call cost of these small graphs by up to a third (tests check that
    ``step`` still equals ``forward``). Frozen once per loaded module: every engine built on it (one per file
    that ``analyze`` reads) shares it, as the stream state lives outside it, and so skips the 25 ms freeze and
    TorchScript's profiling runs (on 8-s files they were a third of pitch analysis' CPU)."""
    if module not in _FROZEN:
        _FROZEN[module] = torch.jit.freeze(module.eval(), preserved_attrs=["step", "initial_stream"])
    return _FROZEN[module]


def activation_for(task: str) -> str:
    from edgemir.tasks import REGISTRY

    return REGISTRY[task].activation


def weights_sha256(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def card_sha256(card: dict) -> str:
    """The digest of a card's content (key order and layout do not matter), without its own field."""
    body = {k: v for k, v in card.items() if k != "card_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sealed_card(card: dict) -> str:
    """The card's JSON text as stored in a bundle, with its ``card_sha256``."""
    card = {k: v for k, v in card.items() if k != "card_sha256"}
    card["card_sha256"] = card_sha256(card)
    return json.dumps(card, indent=1)


def save_bundle(model: TaskModel, card: dict, path: Path, framing: Framing = CENTRED) -> Path:
    """Script the model and write it with its card (sha256, format version and framing filled in)."""
    scripted = torch.jit.script(model.eval())
    card = dict(card)
    card["format_version"] = FORMAT_VERSION
    card["frontend"] = framing.card()
    card["weights_sha256"] = weights_sha256(scripted)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(path), _extra_files={CARD_NAME: sealed_card(card)})
    return path


def read_card(path: Path) -> dict:
    """The card only (no model load): for listing installed bundles quickly."""
    try:
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith("extra/" + CARD_NAME))
            return json.loads(z.read(name))
    except (OSError, zipfile.BadZipFile, StopIteration, json.JSONDecodeError, UnicodeDecodeError, KeyError) as e:
        why = str(e).splitlines()[0][:100] if isinstance(e, zipfile.BadZipFile) and str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable edgemir bundle ({why})") from None


@dataclass
class Bundle:
    path: Path
    card: dict
    module: torch.jit.ScriptModule

    @property
    def task(self) -> str:
        return self.card["task"]


def load_bundle(path: Path) -> Bundle:
    """Load and verify a bundle; every failure is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: bundle not found")
    extra = {CARD_NAME: ""}
    try:
        data = path.read_bytes()
        module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra)
    except Exception as e:  # torch raises many types for corrupt archives
        msg = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: corrupt or truncated bundle ({msg})") from None
    try:
        card = json.loads(extra[CARD_NAME])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: bundle has no readable card") from None
    if not isinstance(card, dict) or card.get("format_version") != FORMAT_VERSION:
        v = card.get("format_version") if isinstance(card, dict) else "?"
        hint = "; upgrade it with `python -m train upgrade`" if v in (1, 2) else ""
        raise UserError(f"{path}: bundle format version {v} is not supported (this edgemir reads version "
                        f"{FORMAT_VERSION}){hint}")
    if card.get("card_sha256") != card_sha256(card):
        raise UserError(f"{path}: the card does not match its sha256 (tampered or damaged bundle)")
    if card.get("task") not in TASKS:
        raise UserError(f"{path}: unknown task {card.get('task')!r} in card")
    try:
        Framing.from_card(card.get("frontend"))
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    if weights_sha256(module) != card.get("weights_sha256"):
        raise UserError(f"{path}: weights do not match the card's sha256 (tampered or damaged bundle)")
    for key in ("receptive_field", "lookahead", "labels"):
        if key not in card:
            raise UserError(f"{path}: card lacks {key!r}")
    return Bundle(path, card, module)


def find_bundles(models_dir: Path | None, tasks: list[str]) -> dict[str, Path]:
    """The bundle per task: first in ``models_dir`` (a folder, or one bundle file), then in the
    package's ``edgemir/models/``. A file given on its own must be a bundle for one of ``tasks``."""
    if models_dir and not Path(models_dir).exists():
        raise UserError(f"{models_dir}: models folder or bundle not found")
    found: dict[str, Path] = {}
    if models_dir and Path(models_dir).is_file():
        t = read_card(Path(models_dir)).get("task")  # not a bundle: a one-line error
        if t not in tasks:
            raise UserError(f"{models_dir}: a bundle for {t!r}, not for the requested {', '.join(tasks)}")
        found[t] = Path(models_dir)
    dirs = ([Path(models_dir)] if models_dir and Path(models_dir).is_dir() else []) + [Path(__file__).parent / "models"]
    for d in dirs:
        for p in sorted(d.glob("*" + SUFFIX)):
            try:
                t = read_card(p).get("task")
            except UserError:
                t = p.name.split(".")[0].split("-")[0]  # reported when loaded
            if t in tasks and t not in found:
                found[t] = p
    return found
