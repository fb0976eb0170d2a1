"""Bundle export: wrap a trained net with the device's filterbank, measure it, write the card."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from edgemir.bundle import (
    CARD_NAME,
    FORMAT_VERSION,
    TaskModel,
    activation_for,
    frozen_for_device,
    load_bundle,
    save_bundle,
    sealed_card,
    weights_sha256,
)
from edgemir.errors import UserError
from edgemir.frontend import FeatureBank, Framing, bank_for
from edgemir.labels import FRAME_RATE, HOP, SAMPLE_RATE
from edgemir.tasks import REGISTRY
from train.nets import FrameNet, net_framing


def card_labels(task: str, net: FrameNet) -> list[str]:
    """The names of a bundle's output rows: the task's classes, or salience bins and voicing for f0."""
    return list(REGISTRY[task].classes) or [f"salience_{net.out_bins}x20c_from_C1", "voicing"]


def feature_spec(task: str, net: FrameNet) -> dict:
    """The task's feature spec on the framing the net was trained on (a card's ``features``)."""
    fr = net_framing(net)
    return {**REGISTRY[task].features, "n_fft": fr.n_fft, "right": fr.right}


def task_model(task: str, net: FrameNet) -> TaskModel:
    state = net.cfg_dict["gru"] if hasattr(net.rnn, "gru") else 0
    if state:
        state = net.rnn.gru.hidden_size
    return TaskModel(FeatureBank(bank_for(feature_spec(task, net))), net.eval(), activation_for(task), state)


def _n_bins(model: TaskModel) -> int:
    return net_framing(model.net).n_bins


def flops_per_second(model: TaskModel) -> int:
    """FLOPs for one second of audio (100 frames): features + network, context excluded."""
    rf = model.net.receptive_field
    with torch.no_grad():
        spec = torch.rand(int(FRAME_RATE), _n_bins(model))
        with FlopCounterMode(display=False) as fc:
            model.features(spec)
        feat_flops = fc.get_total_flops()
        x = torch.randn(1, model.bank.n_features, int(FRAME_RATE) + rf - 1)
        with FlopCounterMode(display=False) as fc:
            model(x, model.initial_state())
    return int(feat_flops + fc.get_total_flops())


def hop_latency_ms(scripted, n_bins: int, runs: int = 200) -> dict:
    """Single-thread wall time of what the engine runs every hop: the frozen module's ``step`` on one new
    frame (features and the network's new frame, from the cached context)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        frozen = frozen_for_device(scripted)
        spec = torch.rand(1, n_bins)
        st = frozen.initial_stream()
        ts = []
        with torch.no_grad():
            for i in range(runs + 20):
                t0 = time.perf_counter()
                _, st = frozen.step(spec, st)
                if i >= 20:
                    ts.append((time.perf_counter() - t0) * 1000)
    finally:
        torch.set_num_threads(threads)
    return {"p50": float(np.percentile(ts, 50)), "p99": float(np.percentile(ts, 99))}


def nonzero_params(net: torch.nn.Module) -> int:
    return int(sum(int((p != 0).sum()) for p in net.parameters()))


def export(task: str, net: FrameNet, path: Path, info: dict, decoder: dict | None = None) -> dict:
    """Write a bundle for ``net`` with a card of measured figures plus ``info`` (scores, round...)."""
    model = task_model(task, net)
    params = sum(p.numel() for p in net.parameters())
    card = {
        "task": task, "labels": card_labels(task, net), "sample_rate": SAMPLE_RATE, "hop": HOP,
        "features": feature_spec(task, net), "receptive_field": net.receptive_field, "lookahead": net.lookahead,
        "architecture": net.cfg_dict, "params": params, "nonzero_params": nonzero_params(net),
        "flops_per_second": flops_per_second(model), "decoder": decoder or {},
    }
    card.update(info)
    path = Path(path)
    fr = net_framing(net)
    save_bundle(model, card, path, fr)
    # measured after writing: the latency of the saved, reloaded bundle, then the file's bytes
    loaded = torch.jit.load(str(path))
    card["latency_ms_per_hop"] = hop_latency_ms(loaded, fr.n_bins)
    _write_settled(lambda c: save_bundle(model, c, path, fr), card, path)
    return card


def _write_settled(write: Callable[[dict], object], card: dict, path: Path) -> None:
    """Write until the card's ``bytes`` equals the file's size (the size depends on the card)."""
    for _ in range(4):
        write(card)
        size = os.path.getsize(path)
        if card.get("bytes") == size:
            return
        card["bytes"] = size
    raise UserError(f"{path}: the card's size field did not settle")


# figures a card reports as measured: an amendment may not touch them
MEASURED = ("task", "labels", "sample_rate", "hop", "features", "receptive_field", "lookahead", "architecture",
            "params", "nonzero_params", "flops_per_second", "bytes", "latency_ms_per_hop", "scores",
            "fraction_removed", "dense_params", "round", "format_version", "frontend", "weights_sha256", "decoder")


def amend_card(path: Path, changes: dict[str, str], reason: str) -> dict:
    """Correct descriptive fields of a written bundle's card (e.g. a mislabelled ``reset``).

    The weights are untouched (their sha256 still checks); the file's bytes are re-measured; the
    card keeps a list of its amendments with the reason and the old values."""
    bad = sorted(set(changes) & set(MEASURED))
    if bad:
        raise UserError(f"{path}: {', '.join(bad)} are measured figures; re-export instead of amending")
    b = load_bundle(path)
    card = dict(b.card)
    card.setdefault("amendments", []).append(
        {"reason": reason, "old": {k: card.get(k) for k in changes}, "new": dict(changes)})
    card.update(changes)
    rewrite_card(path, b.module, card)
    return card


def rebuilt(path: Path) -> tuple[torch.jit.ScriptModule, dict, TaskModel]:
    """A bundle's scripted module, its card, and its network rebuilt as a trainable ``TaskModel`` from the
    card's architecture and the bundle's own weights (checked against the card's sha256)."""
    from train.nets import NetConfig

    extra = {CARD_NAME: ""}
    try:
        old = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        card = json.loads(extra[CARD_NAME])
    except (OSError, RuntimeError, ValueError) as e:
        raise UserError(f"{path}: not a readable bundle ({e})") from None
    if weights_sha256(old) != card.get("weights_sha256"):
        raise UserError(f"{path}: weights do not match the card's sha256; not using a damaged bundle")
    fr = Framing.from_card(card.get("frontend"))  # cards before framings have no framing in the architecture
    net = FrameNet(NetConfig(**{**card["architecture"], "n_fft": fr.n_fft, "right": fr.right}))
    model = task_model(card["task"], net)
    model.load_state_dict(old.state_dict())
    return old, card, model.eval()


def upgrade(path: Path) -> dict:
    """Bring an older bundle (format 1: only its weights sealed; 2: no ``step``) to the current format:
    the network is rebuilt from the card's architecture with the bundle's own weights, checked to give
    the old module's outputs, and saved with the same card (format, seal, bytes and per-hop latency
    re-measured): also how a bundle gets the current streaming code."""
    old, card, model = rebuilt(path)
    fr = Framing.from_card(card.get("frontend"))
    spec = torch.rand(3 * int(card["receptive_field"]) + 20, fr.n_bins)
    with torch.no_grad():
        f = old.features(spec).unsqueeze(0)
        want, _ = old(f, old.initial_state())
        got, _ = model(model.features(spec).unsqueeze(0), model.initial_state())
    if not torch.allclose(want, got, atol=1e-6):
        raise UserError(f"{path}: the rebuilt network does not reproduce the bundle's outputs")
    card.pop("card_sha256", None)
    card["format_version"] = FORMAT_VERSION
    save_bundle(model, card, path, fr)
    card["latency_ms_per_hop"] = hop_latency_ms(torch.jit.load(str(path)), fr.n_bins)  # the new code's, measured
    _write_settled(lambda c: save_bundle(model, c, path, fr), card, path)
    return card


def rewrite_card(path: Path, module, card: dict) -> None:
    """Replace a written bundle's card (same module, bytes re-settled) through a temporary file."""
    tmp = Path(path).with_suffix(".card.tmp")
    try:
        _write_settled(lambda c: torch.jit.save(module, str(tmp), _extra_files={CARD_NAME: sealed_card(c)}), card, tmp)
    except UserError:
        tmp.unlink()
        raise
    tmp.replace(path)


def scripted_size(model: TaskModel) -> int:
    with tempfile.NamedTemporaryFile(suffix=".ts") as f:
        torch.jit.save(torch.jit.script(model), f.name)
        return os.path.getsize(f.name)
