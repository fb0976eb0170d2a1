"""Task metrics through mir_eval, on references and estimates in the project's formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemir.errors import UserError
from edgemir.labels import NO_FAMILY
from edgemir.tasks import REGISTRY
from train import annotations as ann

WINDOW = 0.05  # onset and drum tolerance, seconds


def pitch_scores(ref: tuple, est: tuple) -> dict[str, float]:
    """RPA, RCA, voicing recall, false alarm and overall accuracy (mir_eval.melody); est f0 < 0 =
    unvoiced guess."""
    import mir_eval

    (rt, rf), (et, ef) = ref, est
    rv, rc, ev, ec = mir_eval.melody.to_cent_voicing(rt, rf, et, ef)
    return {
        "rpa": float(mir_eval.melody.raw_pitch_accuracy(rv, rc, ev, ec)),
        "rca": float(mir_eval.melody.raw_chroma_accuracy(rv, rc, ev, ec)),
        "voicing_recall": float(mir_eval.melody.voicing_recall(rv, ev)),
        "voicing_false_alarm": float(mir_eval.melody.voicing_false_alarm(rv, ev)),
        "overall_accuracy": float(mir_eval.melody.overall_accuracy(rv, rc, ev, ec)),
    }


def onset_scores(ref: np.ndarray, est: np.ndarray) -> dict[str, float]:
    import mir_eval

    f, p, r = mir_eval.onset.f_measure(np.asarray(ref), np.asarray(est), window=WINDOW)
    return {"f": float(f), "p": float(p), "r": float(r), "n_ref": int(len(ref)), "n_est": int(len(est))}


def event_scores(ref: dict, est: dict, classes: tuple[str, ...]) -> dict[str, float]:
    """Onset F per class (1.0 where a class has neither reference nor estimate) and their mean; and per class
    the counts (integers: matched, reference, estimated events) that ``aggregate`` pools."""
    import mir_eval

    out: dict = {}
    for c in classes:
        r, e = np.asarray(ref.get(c, []), dtype=float), np.asarray(est.get(c, []), dtype=float)
        hits = 0
        if len(r) == 0 and len(e) == 0:
            out[c] = 1.0
        else:
            f, _, recall = mir_eval.onset.f_measure(r, e, window=WINDOW)
            out[c] = float(f)
            hits = int(round(recall * len(r)))  # the matched events (recall = matched / reference)
        out[f"{c}_counts"] = (hits, len(r), len(e))
    out["mean_f"] = float(np.mean([out[c] for c in classes]))
    return out


def pooled_event_f(vals: list[dict], classes: tuple[str, ...]) -> dict[str, float]:
    """F per class from the events of all items together, and their mean (``pooled_mean_f``). The item mean of
    F scores an item without reference events 1 or 0: one false hit there weighs as much as a whole item, so
    a decoder tuned on it takes the highest threshold it is offered on a split with drum-free items (a voice, a
    guitar). Pooled, each false hit counts once, wherever it falls."""
    out = {}
    for c in classes:
        hits, n_ref, n_est = (sum(v[f"{c}_counts"][i] for v in vals) for i in range(3))
        out[f"{c}_pooled_f"] = 2 * hits / (n_ref + n_est) if n_ref + n_est else 1.0
    out["pooled_mean_f"] = float(np.mean([out[f"{c}_pooled_f"] for c in classes]))
    return out


def chord_scores(ref: tuple, est: tuple) -> dict[str, float]:
    """Weighted chord symbol recall with the majmin comparison; duration in seconds as weight."""
    import mir_eval

    (ri, rl), (ei, el) = ref, est
    ei, el = mir_eval.util.adjust_intervals(np.asarray(ei), list(el), ri.min(), ri.max(),
                                            mir_eval.chord.NO_CHORD, mir_eval.chord.NO_CHORD)
    iv, r, e = mir_eval.util.merge_labeled_intervals(ri, rl, ei, el)
    dur = mir_eval.util.intervals_to_durations(iv)
    comp = mir_eval.chord.majmin(r, e)
    return {"majmin": float(mir_eval.chord.weighted_accuracy(comp, dur)), "seconds": float(dur.sum())}


def aggregate(task: str, per_item: dict[str, dict]) -> dict[str, float]:
    """Dataset-level scores: frame/duration-weighted where the metric is, else item means."""
    if not per_item:
        raise UserError("nothing to score")
    vals = list(per_item.values())
    spec = REGISTRY[task]
    if spec.format == "label":
        refs = [v["ref"] for v in vals]
        ests = [v["est"] for v in vals]
        acc = float(np.mean([r == e for r, e in zip(refs, ests)]))
        f1s = []
        for fam in spec.classes:
            tp = sum(r == fam and e == fam for r, e in zip(refs, ests))
            fp = sum(r != fam and e == fam for r, e in zip(refs, ests))
            fn = sum(r == fam and e != fam for r, e in zip(refs, ests))
            if tp + fp + fn:
                f1s.append(2 * tp / (2 * tp + fp + fn))
        return {"accuracy": acc, "macro_f1": float(np.mean(f1s)), "items": len(vals)}
    if spec.format == "segments":
        w = np.array([v["seconds"] for v in vals])
        return {"majmin": float(np.sum(w * [v["majmin"] for v in vals]) / w.sum()), "items": len(vals)}
    keys = [k for k in vals[0] if isinstance(vals[0][k], float)]
    out = {k: float(np.mean([v[k] for v in vals])) for k in keys}
    if spec.format == "events":
        out |= pooled_event_f(vals, spec.classes)
    out["items"] = len(vals)
    return out


# what decoder settings are tuned for (the headline, except for pitch: see the registry)
TUNE = {name: t.tune for name, t in REGISTRY.items()}


def score_item(task: str, ref, est) -> dict:
    spec = REGISTRY[task]
    if spec.format == "f0":
        return pitch_scores(ref, est)
    if spec.format == "times":
        return onset_scores(ref, est)
    if spec.format == "events":
        return event_scores(ref, est, spec.classes)
    if spec.format == "segments":
        return chord_scores(ref, est)
    return {"ref": ref, "est": est}


def read_estimate(task: str, path: Path):
    label = REGISTRY[task].format == "label"
    if label and not path.exists():
        lab = path.with_name(path.name[: -len(REGISTRY[task].suffix)] + f".{task}.lab")
        if lab.exists():  # a long file analysed per window: the longest-covering family
            iv, labs = ann.read_lab(lab, REGISTRY[task].classes)
            tot: dict[str, float] = {}
            for (a, b), fam in zip(iv, labs):
                tot[fam] = tot.get(fam, 0.0) + b - a
            return max(tot, key=tot.get)
    if not path.exists():
        raise UserError(f"{path}: estimate missing")
    if label and path.read_text().strip() == NO_FAMILY:
        return NO_FAMILY  # the engine heard no sound it could name: scored as a wrong answer, not an error
    return ann.read_annotation(task, path)


def evaluate_folders(task: str, ref_dir: Path, est_dir: Path) -> dict:
    """Score every reference item in ref_dir against the same-named estimate in est_dir."""
    names = ann.list_items(task, ref_dir)
    suf = REGISTRY[task].suffix
    per = {}
    for n in names:
        ref = ann.read_annotation(task, Path(ref_dir) / (n + suf))
        est = read_estimate(task, Path(est_dir) / (n + suf))
        per[n] = score_item(task, ref, est)
    return {"task": task, "summary": aggregate(task, per), "items": per}
