"""``python -m train ship RUN...``: per task, pick the smallest trimmed bundle whose test score is
within 1 point of its dense parent, and on ``shared/dev-real`` (real recordings, where the task has them)
within 1 point of the dense parent's dev-real score too (else say so and take, under 500 KB, the smallest
trimmed one within 1 point of the best trimmed one on both), copy it into ``edgemir/models/``, and write
``docs/results.md``. Every round's dev-real score is measured here, through the engine, and printed beside
its synthetic one. Tasks not named keep their shipped bundle and their row from ``SHIPPED.json``.
Every number comes from a card or is measured here."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from edgemir.app import analyze_file
from edgemir.bundle import load_bundle, read_card
from edgemir.errors import UserError
from edgemir.tasks import HEADLINE
from train import annotations as ann
from train.dataset import training_data
from train.metrics import evaluate_folders
from train.report import RESCORED, load_run

MAX_BYTES = 500 * 1024
TOLERANCE = 0.01


def pick(run: dict, dev: dict[int, float] | None = None) -> tuple[dict, dict, bool]:
    """(dense, chosen, whether the chosen one is within 1 point of dense). ``dev``: round -> dev-real score
    (the rule then holds on real recordings as well as on the synthetic test split)."""
    rounds = run["rounds"]
    dense = rounds[0]
    dev = dev or {}

    def close(r: dict, ref: dict) -> bool:
        return r["test"] >= ref["test"] - TOLERANCE and (r["round"] not in dev or ref["round"] not in dev
                                                          or dev[r["round"]] >= dev[ref["round"]] - TOLERANCE)

    ok = [r for r in rounds[1:] if close(r, dense) and r["bytes"] <= MAX_BYTES]
    if ok:
        return dense, min(ok, key=lambda r: r["params"]), True
    # target missed: among trimmed bundles under 500 KB, the smallest within 1 point of the best one on the
    # synthetic split (and of the best dev-real score)
    small = [r for r in rounds[1:] if r["bytes"] <= MAX_BYTES] or rounds[1:] or rounds
    best_test = max(r["test"] for r in small)
    best_dev = max((dev[r["round"]] for r in small if r["round"] in dev), default=None)
    near = [r for r in small if r["test"] >= best_test - TOLERANCE
            and (best_dev is None or r["round"] not in dev or dev[r["round"]] >= best_dev - TOLERANCE)]
    return dense, min(near or small, key=lambda r: r["params"]), False


def dev_real_by_round(task: str, run_dir: Path, run: dict, dev_real: Path) -> dict[int, float]:
    """Every round's dev-real headline score (through ``edgemir analyze``), printed beside its test score."""
    out = {}
    for r in run["rounds"]:
        s = analyzed_scores(task, Path(run_dir) / "bundles" / r["bundle"], Path(dev_real) / task)
        if s and "error" not in s:
            out[r["round"]] = float(s[HEADLINE[task]])
        print(f"{task} r{r['round']:<2} {r['fraction_removed']:6.1%} removed  test {r['test']:.3f}  "
              f"dev-real {out.get(r['round'], float('nan')):.3f}", flush=True)
    return out


def analyze_folder(task: str, bundle: Path, folder: Path, out: Path) -> float:
    """``edgemir analyze`` one bundle over a folder's clips into ``out``; returns the seconds of audio."""
    b = {task: load_bundle(bundle)}
    return sum(analyze_file(wav, b, out)["duration"] for wav in sorted(folder.glob("*.wav")))


def analyzed_scores(task: str, bundle: Path, folder: Path) -> dict | None:
    """Scores of ``edgemir analyze`` (the device's path, files streamed from disk) on a labelled folder."""
    if not folder.is_dir():
        return None
    try:
        ann.list_items(task, folder)
    except Exception:
        return None
    with tempfile.TemporaryDirectory() as d:
        analyze_folder(task, bundle, folder, Path(d))
        try:
            return evaluate_folders(task, folder, Path(d))["summary"]
        except UserError as e:  # e.g. a clip judged silent ("unknown" family): reported, not fatal
            return {"error": str(e)}


def _generator(folder: Path) -> str | None:
    """The generator version a split was rendered with (its manifest)."""
    return training_data(folder.parent).get(folder.name, {}).get("generator_version")


def _train_banks(folder: Path) -> list[str]:
    """The SoundFonts a training split was rendered with (its manifest)."""
    return training_data(folder.parent).get(folder.name, {}).get("soundfonts") or []


def check_continued(run: str, task: str, dense: dict, before: dict | None) -> None:
    """A continued run's round 0 must be the bundle that SHIPPED.json records for its task (checked before
    anything is copied)."""
    start = dense.get("dense_fit") or {}
    if "bundle" in start and (before is None or before["shipped"].get("params") != dense["params"]):
        raise UserError(f"{run}: continues {start['bundle']}, which SHIPPED.json does not record as the "
                        f"shipped {task} bundle; ship from the run that made it")


def continued(row: dict, before: dict | None) -> dict:
    """A run that continued the trimming of a shipped bundle (``train lottery --init-from BUNDLE.ts``): its
    round 0 is that bundle, not a dense net. The row keeps the lineage's dense parent as recorded when it
    was first shipped, and the bundle it continued as ``continued`` (the rule's reference, by ``pick``)."""
    start = row["dense"].get("dense_fit") or {}
    if "bundle" not in start:
        return row
    check_continued(row["run"], row["task"], row["dense"], before)
    lineage = [*before.get("lineage", []), {**{k: before.get(k) for k in ("run", "settings", "commit", "dense_fit", "data")},
                                             "init_from": ((before.get("continued") or {}).get("from") or {}).get("bundle")}]
    return {**row, "continued": {"round": row["dense"], "dev_real": row["dev_real_dense"], "from": start},
            "dense": before["dense"], "dev_real_dense": before["dev_real_dense"],
            "dense_fit": before.get("dense_fit"), "lineage": lineage}


def ship_command(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shipped = out / "SHIPPED.json"
    before = {r["task"]: r for r in json.loads(shipped.read_text())} if shipped.is_file() else {}
    rows = []
    for run_dir in args.runs:
        run = load_run(run_dir)
        task = run["settings"]["task"]
        dev_scores = dev_real_by_round(task, Path(run_dir), run, Path(args.dev_real))
        dense, chosen, met = pick(run, dev_scores)
        check_continued(str(run_dir), task, dense, before.get(task))
        src = Path(run_dir) / "bundles" / chosen["bundle"]
        for old in out.glob(f"{task}*.ts"):
            old.unlink()
        dst = out / f"{task}.ts"
        shutil.copy(src, dst)
        load_bundle(dst)  # verify what ships
        dense_path = Path(run_dir) / "bundles" / dense["bundle"]
        retuned = [str(p) for p in (dense_path, src) if _retuned(p)]
        aligned = [str(p) for p in (dense_path, src) if _retuned(p, align=True)]
        # the card's test score was measured by the trainer through the engine; check that what
        # `edgemir analyze` writes for the same split scores the same
        analyzed = analyzed_scores(task, dst, Path(args.data_root) / task / "test")
        banks = _train_banks(Path(args.data_root) / task / "train")
        rows.append({"commit": chosen.get("commit", "unknown"), "analyze_test": analyzed, "train_soundfonts": banks,
                     "data": str(Path(args.data_root) / task),
                     "test_generator": _generator(Path(args.data_root) / task / "test"),
                     "task": task, "run": str(run_dir), "settings": run["settings"], "dense": dense, "shipped": chosen,
                     "within_1pt": met, "removed_90": chosen["fraction_removed"] >= 0.9, "retuned": retuned,
                     "aligned": aligned,
                     "rescored": (Path(run_dir) / RESCORED).is_file(),
                     "dense_fit": _relative_run(dense.get("dense_fit")),
                     "dev_real_rounds": {str(k): v for k, v in dev_scores.items()},
                     "dev_real_dense": analyzed_scores(task, dense_path, Path(args.dev_real) / task),
                     "dev_real_shipped": analyzed_scores(task, dst, Path(args.dev_real) / task)})
        rows[-1] = continued(rows[-1], before.get(task))
    named = {r["task"] for r in rows}
    refresh = {t for t in (args.refresh or "").split(",") if t}
    if refresh & named:
        raise UserError(f"--refresh {', '.join(sorted(refresh & named))}: shipped from a run now, nothing to refresh")
    if not rows and not refresh:
        raise UserError("give lottery runs to ship, or --refresh TASKS")
    # keep the rows of tasks not re-shipped now (their bundles stay as they are)
    rows += [refreshed(r, out / f"{r['task']}.ts", args) if r["task"] in refresh else r
             for r in before.values() if r["task"] not in named and (out / f"{r['task']}.ts").is_file()]
    rows = [_card_figures(r, out / f"{r['task']}.ts") for r in rows]
    rows.sort(key=lambda r: r["task"])
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(results_markdown(rows))
    (out / "SHIPPED.json").write_text(json.dumps(rows, indent=1, default=str))
    print(f"shipped {len(rows)} bundles to {out}; wrote {args.results}")


def refreshed(row: dict, bundle: Path, args) -> dict:
    """A kept row whose bundle was re-tuned in place: its test score and decoder from the card, and the
    analyze and dev-real figures measured again."""
    task = row["task"]
    card = read_card(bundle)
    test = card["scores"]["test"]
    shipped = {**row["shipped"], "test": float(test[HEADLINE[task]]), "decoder": card.get("decoder")}
    aligned = set(row.get("aligned", [])) | ({str(bundle)} if _retuned(bundle, align=True) else set())
    return {**row, "shipped": shipped, "retuned": sorted(set(row.get("retuned", [])) | {str(bundle)}),
            "aligned": sorted(aligned),
            "within_1pt": shipped["test"] >= row["dense"]["test"] - TOLERANCE,
            "analyze_test": analyzed_scores(task, bundle, Path(args.data_root) / task / "test"),
            "test_generator": _generator(Path(args.data_root) / task / "test"),
            "dev_real_shipped": analyzed_scores(task, bundle, Path(args.dev_real) / task)}


def _card_figures(row: dict, bundle: Path) -> dict:
    """The shipped row's size, cost and per-hop time as the shipped bundle's card states them now: ``train
    upgrade`` re-exports bundles in place and re-measures their per-hop time, after the row was written."""
    card = read_card(bundle)
    now = {"params": card["params"], "bytes": card["bytes"], "flops_per_second": card["flops_per_second"],
           "latency_ms_p50": card["latency_ms_per_hop"]["p50"]}
    return {**row, "shipped": {**row["shipped"], **now}}


def _relative_run(fit: dict | None) -> dict | None:
    """The dense parent's fit run with its path as seen from here (the card keeps the path it was given)."""
    return fit and {**fit, "run": os.path.relpath(fit["run"])}


def _retuned(bundle: Path, align: bool = False) -> bool:
    """Whether ``train retune`` re-tuned this bundle's decoder (with ``align``: its output alignment too)
    after its lottery run wrote it."""
    return any("tuned_for" in a.get("new", {}) and (not align or "lookahead" in a["new"])
               for a in read_card(bundle).get("amendments", []))


def _fmt_dev(d: dict | None, task: str) -> str:
    if not d or "error" in d:
        return "—"
    return f"{d[HEADLINE[task]]:.3f}"


def _lottery_line(run: str, s: dict, fit: dict | None, bundle: str | None = None, data: str | None = None) -> str:
    start = bundle or (fit and fit["run"])
    return (f"python -m train lottery --task {s['task']} --data {data or 'data/' + s['task']} --out {run} "
            f"--mode {s['mode']} "
            f"--criterion {s['criterion']} --scope {s['scope']} --reset {s['reset']} --rounds {s['rounds']} "
            f"--rate {s['rate']} --rewind-epoch {s['rewind_epoch']} --epochs {s['epochs']} --steps {s['steps']} "
            f"--width {s['width']} --seed {s['seed']}" + (f" --min-keep {s['min_keep']}" if s.get("min_keep") else "")
            + (f" --distill {s['distill']}" if s.get("distill") else "")
            + (f" --target {s['target']}" if s.get("target") else "")
            + (f" --init-from {start}" if start else ""))


def results_markdown(rows: list[dict]) -> str:
    L = ["# Results: dense vs shipped bundles", "",
         "Scores: cross-soundfont test split (rendered with TimGM6mb; training banks per task below) "
         "and `shared/dev-real` (real recordings, for the tasks it has). Latency (`hop ms`): one hop, single thread, "
         "p50, from the card, measured on the training machine (2 cores, x86_64): one frozen incremental `step` of "
         "one new frame, what the engine runs every hop, for bundles exported or upgraded (`python -m train upgrade`) "
         "since 2026-12-04; older cards, such as dense parents exported before, timed features plus the network on "
         "its whole receptive field. All figures come from the bundle cards or were measured by `python -m train ship`.",
         "",
         "`analyze` is the shipped bundle's test score recomputed from what `edgemir analyze` wrote for "
         "the test split (files streamed from disk, the device's code path): it must equal the card's.",
         "",
         "`gen`: the generator version of the test split (2: General MIDI banks; 3: also synthesised singers, "
         "plucks, tones, amps and full bands, docs/realistic-data.md); rows of one task share it.",
         "",
         "| task | model | removed | params | KB | MFLOP/s | hop ms | gen | test | analyze | dev-real | target |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        t = r["task"]
        steps = [("dense", r["dense"], r["dev_real_dense"])]
        if r.get("continued"):  # the shipped bundle whose trimming this run continued
            steps.append(("continued", r["continued"]["round"], r["continued"]["dev_real"]))
        for name, row, dev in [*steps, ("shipped", r["shipped"], r["dev_real_shipped"])]:
            target = ""
            if name == "shipped":
                target = ("met" if r["within_1pt"] and r["removed_90"] else
                          "missed: " + ", ".join(x for x, ok in (("≥90% removed", r["removed_90"]),
                                                                  ("within 1 pt", r["within_1pt"])) if not ok))
            L.append(f"| {t} ({HEADLINE[t]}) | {name} r{row['round']} | {row['fraction_removed']:.1%} | {row['params']:,} | "
                     f"{row['bytes'] / 1024:.0f} | {row['flops_per_second'] / 1e6:.1f} | {row['latency_ms_p50']:.3f} | "
                     f"{r.get('test_generator') or 2} | {row['test']:.3f} | "
                     f"{_fmt_dev(r['analyze_test'], t) if name == 'shipped' else ''} | "
                     f"{_fmt_dev(dev, t)} | {target} |")
    L += ["", "## Training data", ""]
    for r in rows:  # rows shipped before generator 2 carry no list: they were trained on FluidR3_GM (+ drum kits)
        banks = r.get("train_soundfonts") or ["FluidR3_GM.sf2 (generator 1)"]
        L.append(f"- {r['task']}: {', '.join(banks)}")
    notes: dict[str, list[str]] = {}
    for r in rows:
        if r.get("note"):
            notes.setdefault(r["note"], []).append(r["task"])
    if notes:
        L += ["", "## Notes", "", *(f"- {', '.join(tasks)}: {note}" for note, tasks in notes.items())]
    L += ["", "## Commands", "", "Each run at the commit that trained its shipped round.", "", "```"]
    for r in rows:
        L.append(f"# {r['task']}: commit {r.get('commit', 'unknown')}")
        fit = r.get("dense_fit")
        data = r.get("data") or f"data/{r['task']}"  # (rows shipped before it was recorded: data/<task>)
        if fit:
            s = r["settings"]
            L.append(f"python -m train fit --task {s['task']} --data {data} --out {fit['run']} "
                     f"--epochs {fit['epochs']} --steps {fit['steps']} --width {s['width']} --seed {s['seed']}")
        for step in r.get("lineage", []):  # the runs whose shipped bundle the next one continued
            line = _lottery_line(step["run"], step["settings"], step.get("dense_fit"), step.get("init_from"),
                                 step.get("data"))
            L.append(f"{line}  # commit {step.get('commit')}")
        cont = (r.get("continued") or {}).get("from")
        L.append(_lottery_line(r["run"], r["settings"], None if cont else fit, cont and cont["bundle"], data))
        if r.get("rescored"):
            L.append(f"python -m train rescore {r['run']} --data {data} --reason '...'")
        plain = [b for b in r.get("retuned", []) if b not in r.get("aligned", [])]
        if plain:
            L.append(f"python -m train retune {' '.join(plain)} --data {data} --reason '...'")
        if r.get("aligned"):
            L.append(f"python -m train retune {' '.join(r['aligned'])} --data {data} --align --reason '...'")
    L.append("python -m train ship " + " ".join(r["run"] for r in rows))
    L += ["```", ""]
    return "\n".join(L)
