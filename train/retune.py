"""Re-measure written bundles: ``retune`` re-tunes a bundle's decoder on valid and re-scores it (with
``align``, also the frame its outputs are stamped with); ``rescore_run`` re-scores every round of a
lottery run on its (e.g. enlarged) test split.

The weights and every other measured figure stay; what changes is replaced by what this code
measured, and the old values are kept (the card's ``amendments``, the run's ``rescored.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from edgemir.bundle import load_bundle
from edgemir.errors import UserError
from edgemir.frontend import Framing
from edgemir.tasks import REGISTRY, make_decoder
from train import metrics
from train.dataset import load_split
from train.export import rewrite_card
from train.fit import LATENCY_TOLERANCE, model_probs, tune_on
from train.report import RESCORED, load_run

# Output alignments ``align`` tries, in frames added to the bundle's look-ahead (the engine stamps output j
# with input frame j + rf - 1 - lookahead, so at most rf - 1; at least the framing's ``min_lookahead``).
ALIGN_STEPS = (-1, 0, 1, 2, 3, 4)
# formats whose score is frame-wise (it sees timing): pitch per frame, chord segments by overlap
ALIGNABLE = ("f0", "segments")


def retune(path: Path, data: Path, reason: str, align: bool = False) -> dict:
    """Tune on ``data/valid`` (by ``metrics.TUNE``), score ``data/test`` with those settings, rewrite.

    With ``align``, the frame each output is stamped with is tuned too. A net trained to label a frame
    before its window is complete (negative look-ahead) can only partly extrapolate, so on moving pitch
    its outputs describe an earlier frame than the one they are stamped with; a causal smoothing decoder
    (the chord HMM) lags the same way. Every alignment of ``ALIGN_STEPS`` is tuned on valid (its decoder
    too); among those within ``LATENCY_TOLERANCE`` of the best, the least delay (look-ahead plus the
    decoder's) wins. The card's ``lookahead`` becomes that alignment (what the engine stamps with and what
    latency counts); ``architecture.lookahead`` stays what training used."""
    b = load_bundle(path)
    card = dict(b.card)
    task = card["task"]
    # Only a frame-wise score measures timing: an event task's F counts a hit anywhere within 50 ms, so the
    # least look-ahead within tolerance would merely stamp its events later and read as less latency.
    if align and REGISTRY[task].format not in ALIGNABLE:
        raise UserError(f"{path}: --align needs a frame-wise score (pitch, chord); {task}'s events are scored "
                        "within 50 ms")
    valid_items = load_split(task, Path(data) / "valid")
    la0 = int(card["lookahead"])
    top = int(card["receptive_field"]) - 1
    tried = {}
    low = Framing.from_card(card["frontend"]).min_lookahead
    for la in sorted({min(top, max(low, la0 + s)) for s in ALIGN_STEPS}) if align else [la0]:
        c = {**card, "lookahead": la}
        tried[la] = tune_on(task, model_probs(task, b.module, c, valid_items))
    key = metrics.TUNE[task]
    best = max(float(v[key]) for _, v in tried.values())
    near = [a for a, (_, v) in tried.items() if float(v[key]) >= best - LATENCY_TOLERANCE]
    la = min(near, key=lambda a: (a + make_decoder(task, **tried[a][0]).delay_frames, a))
    kw, valid = tried[la]
    card["lookahead"] = la
    _, test = tune_on(task, model_probs(task, b.module, card, load_split(task, Path(data) / "test")), kw)
    kw = json.loads(json.dumps(kw))  # tuples -> lists, as a card holds them
    old = {"decoder": card.get("decoder"), "scores": card.get("scores")}
    new = {"decoder": kw, "tuned_for": key}
    if align:
        old["lookahead"] = la0
        new["lookahead"] = la
        new["valid_by_lookahead"] = {str(a): float(v[key]) for a, (_, v) in tried.items()}
    card.setdefault("amendments", []).append({"reason": reason, "old": old, "new": new})
    card["decoder"], card["scores"] = kw, {"valid": valid, "test": test}
    rewrite_card(path, b.module, card)
    return card


def rescore_run(run: Path, data: Path, reason: str) -> dict:
    """Score every round's bundle of a lottery run on ``data/test`` with the decoder it already has;
    returns this rescore's entry (reason, test split, old and new scores per round).

    Cards get an amendment; ``RUN/rescored.json`` maps rounds to old and new test scores, and
    ``train.report.load_run`` applies it (rounds.json stays as the trainer wrote it, so a resumed
    run cannot overwrite the new scores; later rounds are scored on the new split anyway)."""
    run = Path(run)
    info = load_run(run)  # a clear error for a folder that is not a finished lottery run
    task = info["settings"]["task"]
    test_dir = Path(data) / "test"
    test = load_split(task, test_dir)
    manifest = test_dir / "manifest.json"
    split = {"folder": str(test_dir), "items": len(test),
             "minutes": json.loads(manifest.read_text()).get("minutes") if manifest.is_file() else None}
    path = run / RESCORED
    done = json.loads(path.read_text()) if path.is_file() else {"rescores": []}
    entry = {"reason": reason, "test_split": split, "rounds": {}}
    done["rescores"].append(entry)
    for row in info["rounds"]:
        bundle = run / "bundles" / row["bundle"]
        b = load_bundle(bundle)
        card = dict(b.card)
        if card.get("decoder") is None:  # tune_on would tune on the test split itself
            raise UserError(f"{bundle}: its card has no decoder settings to score with")
        _, new = tune_on(task, model_probs(task, b.module, card, test), card["decoder"])
        old = card["scores"]["test"]
        card.setdefault("amendments", []).append(
            {"reason": reason, "old": {"scores": {"test": old}}, "new": {"test_split": split}})
        card["scores"] = {**card["scores"], "test": new}
        rewrite_card(bundle, b.module, card)
        entry["rounds"][str(row["round"])] = {"old": old, "new": new}
        path.write_text(json.dumps(done, indent=1))  # after every card, so an interruption loses nothing
    return entry
