"""``python -m train report RUN... --out DIR``: a markdown table and the paper-style figures
(test score vs remaining parameters, and vs measured latency) from lottery runs.

The report keeps the records it was made from: ``DIR/runs/NAME/`` holds a copy of each run's
``rounds.json`` (and ``rescored.json``), so a report committed to the repository can be rewritten, or
joined with new runs, after the run folders themselves (weights, bundles; git-ignored) are gone."""

from __future__ import annotations

import json
from pathlib import Path

from edgemir.errors import UserError
from edgemir.tasks import HEADLINE

RESCORED = "rescored.json"  # written by `train rescore`: test scores re-measured on a new test split
ARCHIVE = "runs"  # DIR/runs/NAME/: the records a report was made from
SOURCE = "source.txt"  # in an archived record: the run folder it was copied from


def source_of(run: Path) -> Path:
    """The run folder a record came from: itself, or for an archived copy the folder named in source.txt."""
    p = Path(run) / SOURCE
    return Path(p.read_text().strip()) if p.is_file() else Path(run)


def load_run(run: Path) -> dict:
    p = Path(run) / "rounds.json"
    if not p.exists():
        raise UserError(f"{run}: no rounds.json (not a lottery run folder)")
    raw = p.read_text()
    d = json.loads(raw)
    if not d.get("rounds"):
        raise UserError(f"{run}: no finished rounds yet")
    s = d["settings"]
    rescored = Path(run) / RESCORED
    d["record"] = {"rounds.json": raw, RESCORED: rescored.read_text() if rescored.is_file() else None}
    if d["record"][RESCORED] is not None:
        apply_rescores(json.loads(d["record"][RESCORED]), s["task"], d["rounds"])
    d["label"] = f"{s['mode']} {s['criterion']} {s['scope']} {s['reset']}" if s["mode"] == "trim" else \
        f"mask magnitude {s['reset']}"
    if s.get("min_keep"):
        d["label"] += f" keep≥{s['min_keep']:g}"
    if s.get("distill"):
        d["label"] += f" distill {s['distill']:g}"
    if s.get("target"):
        d["label"] += f" target {s['target']:.0%}"
    if s.get("width", 1.0) != 1.0:
        d["label"] += f" w{s['width']:g}"
    if s.get("rate", 0.2) != 0.2:  # the paper's rate is the unmarked default
        d["label"] += f" rate {s['rate']:g}"
    if s.get("init_from"):  # round 0 is a separate, longer `train fit` run
        d["label"] += f" from {Path(s['init_from']).name}"
    src = source_of(run)
    if src.parent.name != "runs":  # e.g. runs/cmp: a separate, smaller-scale study
        d["label"] += f" [{src.parent.name}]"
    d["path"] = str(src)
    return d


def record_name(src: Path) -> str:
    """The archived record's folder name: the run's, qualified by its study folder (runs/cmp/x: cmp--x)."""
    return src.name if src.parent.name == "runs" else f"{src.parent.name}--{src.name}"


def archive(runs: list[dict], out: Path) -> None:
    """Copy each run's records to ``out/runs/NAME/`` (replacing what an earlier report left there)."""
    import shutil

    root = out / ARCHIVE
    if root.exists():
        shutil.rmtree(root)
    for run in runs:
        src = Path(run["path"])
        dest = root / record_name(src)
        dest.mkdir(parents=True)
        (dest / SOURCE).write_text(f"{src}\n")
        for file, text in run["record"].items():
            if text is not None:
                (dest / file).write_text(text)


def apply_rescores(rescored: dict, task: str, rounds: list[dict]) -> None:
    """Replace the test scores of ``rounds`` (rows of rounds.json) by the latest of a run's ``rescored.json``."""
    by_round = {str(r["round"]): r for r in rounds}
    for rescore in rescored["rescores"]:
        for rnd, d in rescore["rounds"].items():
            row = by_round.get(rnd)
            if row is not None:
                row.setdefault("test_before_rescore", row["test"])
                row["test"], row["test_all"] = d["new"][HEADLINE[task]], d["new"]


def markdown(runs: list[dict]) -> str:
    lines = []
    for task in sorted({r["settings"]["task"] for r in runs}):
        lines.append(f"### {task} (test {HEADLINE[task]}, cross-soundfont)\n")
        lines.append("| run | round | removed | params | non-zero | KB | MFLOP/s | hop ms | valid | test | Δ test |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for run in [r for r in runs if r["settings"]["task"] == task]:
            dense = run["rounds"][0]["test"]
            for row in run["rounds"]:
                lines.append(
                    f"| {run['label']} s{run['settings']['seed']} | {row['round']} | {row['fraction_removed']:.1%} | "
                    f"{row['params']:,} | {row['nonzero_params']:,} | {row['bytes'] / 1024:.0f} | "
                    f"{row['flops_per_second'] / 1e6:.1f} | {row['latency_ms_p50']:.3f} | {row['valid']:.3f} | "
                    f"{row['test']:.3f} | {100 * (row['test'] - dense):+.1f} pt |")
        lines.append("")
    return "\n".join(lines)


def figures(runs: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    tasks = sorted({r["settings"]["task"] for r in runs})
    for xkey, xlabel, name in (("remaining", "remaining parameters (fraction of dense, log)", "score_vs_params"),
                               ("latency_ms_p50", "latency per hop, ms (single thread, log)", "score_vs_latency")):
        n_legend = max(sum(r["settings"]["task"] == t for r in runs) for t in tasks)  # legends go below the axes
        fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.6 + 0.16 * n_legend), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            for i, run in enumerate(r for r in runs if r["settings"]["task"] == task):
                xs = [row[xkey] if xkey != "remaining" else max(row["remaining"], 1e-4) for row in run["rounds"]]
                # ten colours, then the next ten dashed with squares, so that no two runs look alike
                ax.plot(xs, [row["test"] for row in run["rounds"]], color=f"C{i % 10}", marker="osD^"[i // 10 % 4],
                        linestyle=("-", "--", ":", "-.")[i // 10 % 4], label=f"{run['label']} s{run['settings']['seed']}")
            ax.set_xscale("log")
            if xkey == "remaining":
                ax.invert_xaxis()
            ax.set_title(task)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(f"test {HEADLINE[task]}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        fig.tight_layout()
        p = out / f"{name}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def report_command(args) -> None:
    runs = [load_run(r) for r in args.runs]
    out = Path(args.out)
    names = [record_name(Path(r["path"])) for r in runs]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f"two runs would be kept under the same name ({', '.join(twice)}): a run and its archived "
                        "copy, or two studies' runs of the same name")
    out.mkdir(parents=True, exist_ok=True)
    archive(runs, out)
    (out / "report.md").write_text("# Lottery-ticket trimming report\n\n" + markdown(runs) +
                                   "\n![score vs parameters](score_vs_params.png)\n\n"
                                   "![score vs latency](score_vs_latency.png)\n")
    figures(runs, out)
    print(f"wrote {out / 'report.md'}, figures and the runs' records in {out / ARCHIVE}")
