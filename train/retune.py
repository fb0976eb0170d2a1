"""Re-tune a written bundle's decoder settings on its task's valid split and re-measure its scores.

The weights and every other measured figure stay; the card's ``decoder`` and ``scores`` are
replaced by what this code measured, the old values are kept in the card's ``amendments``."""

from __future__ import annotations

import json
from pathlib import Path

from edgemir.bundle import load_bundle
from train import metrics
from train.dataset import load_split
from train.export import rewrite_card
from train.fit import model_probs, tune_on


def retune(path: Path, data: Path, reason: str) -> dict:
    """Tune on ``data/valid`` (by ``metrics.TUNE``), score ``data/test`` with those settings, rewrite."""
    b = load_bundle(path)
    card = dict(b.card)
    task = card["task"]
    kw, valid = tune_on(task, model_probs(task, b.module, card, load_split(task, Path(data) / "valid")))
    _, test = tune_on(task, model_probs(task, b.module, card, load_split(task, Path(data) / "test")), kw)
    kw = json.loads(json.dumps(kw))  # tuples -> lists, as a card holds them
    old = {"decoder": card.get("decoder"), "scores": card.get("scores")}
    card.setdefault("amendments", []).append(
        {"reason": reason, "old": old, "new": {"decoder": kw, "tuned_for": metrics.TUNE[task]}})
    card["decoder"], card["scores"] = kw, {"valid": valid, "test": test}
    rewrite_card(path, b.module, card)
    return card
