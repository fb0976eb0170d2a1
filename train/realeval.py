"""``python -m train realeval``: the real-audio yardstick. Scores bundles on every task that
``../shared/dev-real`` holds, through ``edgemir analyze`` (the device's code path) and mir_eval, with rows
per task and per category (female / male voice / guitar; solo kit / full mix; instrument family, with a
confusion matrix), and writes them as JSON and Markdown.

Categories come from the sources lists beside the recordings (their ``note`` column) or, for instrument
clips, from the reference family. dev-real is for evaluation only: nothing here trains or tunes on it.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections import defaultdict
from pathlib import Path

from edgemir.bundle import find_bundles
from edgemir.tasks import HEADLINE, REGISTRY
from train import annotations as ann
from train.metrics import aggregate, evaluate_folders
from train.ship import analyze_folder

DEV_TASKS = ("pitch", "onset", "chord", "drums", "instrument")


def notes(root: Path) -> dict[str, str]:
    """``task/name`` -> the sources list's note for that recording (empty when none)."""
    out: dict[str, str] = {}
    for f in sorted(root.glob("SOURCES*.csv")):
        with open(f, newline="") as fh:
            for row in csv.DictReader(fh):
                out[row["file"].rsplit(".", 1)[0]] = (row.get("note") or "").strip()
    return out


def category(task: str, name: str, note: str, ref=None) -> str:
    """The row a recording is reported under."""
    n = note.lower()
    fmt = REGISTRY[task].format
    if fmt == "f0":
        for key, cat in (("female", "female voice"), ("male", "male voice"), ("distorted", "distorted guitar"),
                         ("clean", "clean guitar"), ("guitar", "guitar"), ("bass", "bass")):
            if key in n:
                return cat
        return "voice (solo)" if "vocadito" in name else "other"
    if fmt in ("times", "events"):
        if "mix" in n or "mdbmix" in name:
            return "full mix"
        if "mdbdrums" in name or "hits" in n:
            return "solo kit"
        return "mixed excerpts" if "madmom" in name else "other"
    if fmt == "label":
        return str(ref)
    return "all"


def score_task(task: str, bundle: Path, folder: Path, note_of: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory() as d:
        analyze_folder(task, bundle, folder, Path(d))
        res = evaluate_folders(task, folder, Path(d))
    items = res["items"]
    label = REGISTRY[task].format == "label"
    groups: dict[str, dict] = defaultdict(dict)
    for name, sc in items.items():
        ref = sc.get("ref") if label else None
        groups[category(task, name, note_of.get(f"{task}/{name}", ""), ref)][name] = sc
    cats = {c: aggregate(task, g) for c, g in sorted(groups.items())}
    if label:  # one family per row: its accuracy is that family's recall; a macro-F1 means nothing
        cats = {c: {"accuracy": v["accuracy"], "items": v["items"]} for c, v in cats.items()}
    out = {"bundle": str(bundle), "summary": res["summary"], "categories": cats, "items": items}
    if label:
        classes = REGISTRY[task].classes
        labels = sorted({str(v["ref"]) for v in items.values()} | {str(v["est"]) for v in items.values()},
                        key=lambda f: (classes.index(f) if f in classes else 99, f))
        conf = {r: {e: 0 for e in labels} for r in labels}
        for v in items.values():
            conf[str(v["ref"])][str(v["est"])] += 1
        out["confusion"] = {"labels": labels, "rows": conf}
    return out


def drum_false_hits(bundle: Path, folder: Path, note_of: dict[str, str]) -> dict:
    """Drum hits per minute that a drums bundle reports on drum-free recordings (dev-real's melody stems)."""
    from edgemir.app import analyze_file
    from edgemir.bundle import load_bundle

    b = {"drums": load_bundle(bundle)}
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as d:
        for wav in sorted(folder.glob("*.wav")):
            info = analyze_file(wav, b, Path(d))
            path = Path(d) / f"{wav.stem}.drums"
            hits = sum(len(v) for v in ann.read_drums(path).values()) if path.is_file() else 0
            cat = category("pitch", wav.stem, note_of.get(f"pitch/{wav.stem}", ""))
            rows[wav.stem] = {"category": cat, "minutes": info["duration"] / 60, "hits": hits,
                              "per_minute": hits / max(info["duration"] / 60, 1e-9)}
    total_min = sum(r["minutes"] for r in rows.values())
    return {"bundle": str(bundle), "items": rows, "per_minute": sum(r["hits"] for r in rows.values()) / max(total_min, 1e-9),
            "worst_per_minute": max((r["per_minute"] for r in rows.values()), default=0.0)}


def tuner_check(bundle: Path) -> dict:
    """The steady-tone tuner check (train/tuner.py) of a pitch bundle."""
    from train.tuner import measure

    rows = measure(bundle)
    per_kind = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        rs = [r for r in rows if r["kind"] == kind]
        ok = [r for r in rs if abs(r["median_cents"]) <= 2.0 and r["right_note"] >= 0.99]
        per_kind[kind] = {"tones": len(rs), "within_2_cents_and_right_note": len(ok),
                          "worst_abs_median_cents": max(abs(r["median_cents"]) if r["median_cents"] == r["median_cents"]
                                                        else float("inf") for r in rs)}
    return {"bundle": str(bundle), "rows": rows, "kinds": per_kind}


def realeval(bundles: list[Path], dev_real: Path) -> dict:
    """Every task of dev-real that has a bundle among ``bundles`` (files or folders; the shipped bundles
    when none are given)."""
    note_of = notes(dev_real)
    report: dict = {"dev_real": str(dev_real), "tasks": {}}
    sources = bundles or [None]
    for task in DEV_TASKS:
        folder = dev_real / task
        if not folder.is_dir() or not ann.list_items(task, folder):
            continue
        for src in sources:
            found = find_bundles(src, [task]) if src is None or Path(src).is_dir() else {}
            if src is not None and Path(src).is_file():
                from edgemir.bundle import read_card

                if read_card(Path(src)).get("task") == task:
                    found = {task: Path(src)}
            if task in found:
                report["tasks"].setdefault(task, []).append(score_task(task, found[task], folder, note_of))
                fmt = REGISTRY[task].format
                if fmt == "events" and (dev_real / "pitch").is_dir():  # hits on the drum-free melody stems
                    fh = drum_false_hits(found[task], dev_real / "pitch", note_of)
                    report.setdefault("drum_false_hits", []).append(fh)
                if fmt == "f0":
                    report.setdefault("tuner", []).append(tuner_check(found[task]))
    return report


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown(report: dict) -> str:
    lines = [f"# Real recordings (`{report['dev_real']}`)", "",
             "Scored with mir_eval on what `edgemir analyze` wrote (`python -m train realeval`). Headline metrics: "
             + ", ".join(f"{t} {m}" for t, m in HEADLINE.items()) + ".", ""]
    for task, runs in report["tasks"].items():
        key = HEADLINE[task]
        lines += [f"## {task}", "", f"| bundle | category | items | {key} | other |", "|---|---|---:|---:|---|"]
        for r in runs:
            name = Path(r["bundle"]).name
            rows = [("**all**", r["summary"])] + list(r["categories"].items())
            for cat, sc in rows:
                other = ", ".join(f"{k} {_fmt(v)}" for k, v in sc.items()
                                  if k not in (key, "items") and not k.endswith("_pooled_f"))
                lines.append(f"| {name} | {cat} | {sc.get('items', '')} | {_fmt(sc.get(key))} | {other} |")
            if "confusion" in r:
                labs = r["confusion"]["labels"]
                lines += ["", f"Confusion ({name}; rows: reference, columns: answer):", "",
                          "| | " + " | ".join(labs) + " |", "|---|" + "---:|" * len(labs)]
                for ref in labs:
                    row = r["confusion"]["rows"][ref]
                    if sum(row.values()):
                        lines.append(f"| {ref} | " + " | ".join(str(row[e] or "") for e in labs) + " |")
        lines.append("")
    for r in report.get("drum_false_hits", []):
        lines += [f"## drums on drum-free stems ({Path(r['bundle']).name})", "",
                  f"Drum hits per minute on dev-real's melody stems (voices, guitar; no drums): {r['per_minute']:.2f} "
                  f"overall, {r['worst_per_minute']:.2f} on the worst stem.", "",
                  "| stem | category | minutes | hits | per minute |", "|---|---|---:|---:|---:|"]
        lines += [f"| {n} | {v['category']} | {v['minutes']:.1f} | {v['hits']} | {v['per_minute']:.2f} |"
                  for n, v in r["items"].items()]
        lines.append("")
    for r in report.get("tuner", []):
        from train.tuner import octave_table

        lines += [f"## tuner: steady tones E1-C7 ({Path(r['bundle']).name})", "",
                  "1-s tones on every semitone (harmonic, pure sine, Karplus-Strong pluck), read through the engine "
                  "(`train/tuner.py`); per tone the median reading of its voiced frames.", ""]
        lines += [f"- {k}: {v['within_2_cents_and_right_note']}/{v['tones']} tones within ±2 cents and on the right note "
                  f"(≥ 99% of voiced frames); worst median {v['worst_abs_median_cents']:.1f} cents"
                  for k, v in r["kinds"].items()]
        lines += ["", *octave_table(r["rows"]), ""]
    return "\n".join(lines)


def realeval_command(args) -> None:
    from edgemir.errors import UserError

    dev = Path(args.dev_real)
    if not dev.is_dir():
        raise UserError(f"{dev}: no dev-real folder (see ../shared/README.md)")
    report = realeval([Path(b) for b in args.bundles], dev)
    if not report["tasks"]:
        raise UserError("no bundle for any task that dev-real holds")
    md = markdown(report)
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "realeval.json").write_text(json.dumps(report, indent=1, default=str))
        (out / "realeval.md").write_text(md + "\n")
