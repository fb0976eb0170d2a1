"""``python -m train latency BUNDLE... --data DIR``: the look-ahead x score x latency table of the live design.

For each bundle and each decoder delay it allows (the onset/drums peak-picking window 0, 1, 2; one row for
tasks without one), the decoder's threshold is tuned on ``DIR/TASK/valid`` as training does, and the
synthetic test split and ``shared/dev-real`` are scored with it through the engine. The algorithmic latency
is what a frame waits for before its event can exist: the audio past the labelled time that the network
sees (its window's reach past the frame: 32 ms centred, 10 ms causal; + 10 ms per look-ahead frame) plus the
decoder's delay; a live block and
the compute add to it (measured by ``tests/live_budget.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

from edgemir.bundle import load_bundle
from edgemir.frontend import CENTRED, Framing
from edgemir.labels import FRAME_RATE, SAMPLE_RATE
from edgemir.tasks import HEADLINE, REGISTRY
from train import metrics
from train.dataset import load_split
from train.fit import model_probs, tune_on
from train.ship import analyzed_scores


def algorithmic_ms(lookahead: int, delay: int, framing: Framing = CENTRED) -> float:
    return framing.right / SAMPLE_RATE * 1000 + (lookahead + delay) * 1000 / FRAME_RATE


def rows_for(bundle: Path, data: Path, dev_real: Path | None) -> list[dict]:
    b = load_bundle(bundle)
    card = dict(b.card)
    task, la = card["task"], int(card["lookahead"])
    valid = model_probs(task, b.module, card, load_split(task, data / task / "valid"))
    test = model_probs(task, b.module, card, load_split(task, data / task / "test"))
    out = []
    windows = sorted({kw["window"] for kw in REGISTRY[task].grid if "window" in kw}) or [None]
    for w in windows:
        grid = [kw for kw in _grid(task) if w is None or kw.get("window") == w]
        kw, v = max(((kw, tune_on(task, valid, kw)[1]) for kw in grid), key=lambda r: float(r[1][metrics.TUNE[task]]))
        _, t = tune_on(task, test, kw)
        row = {"bundle": bundle.name, "task": task, "lookahead": la, "decoder": kw, "delay": w or 0,
               "latency_ms": algorithmic_ms(la, w or 0, Framing.from_card(card["frontend"])),
               "valid": float(v[HEADLINE[task]]), "test": float(t[HEADLINE[task]])}
        if dev_real is not None and (dev_real / task).is_dir():
            with _decoder_card(bundle, kw) as tmp:
                d = analyzed_scores(task, tmp, dev_real / task)
            row["dev_real"] = float(d[HEADLINE[task]]) if d and "error" not in d else None
        out.append(row)
    return out


def _grid(task: str) -> list[dict]:
    from train.fit import decoder_grid

    return decoder_grid(task)


class _decoder_card:
    """A temporary copy of a bundle whose card carries other decoder settings (dev-real runs through analyze)."""

    def __init__(self, bundle: Path, kw: dict) -> None:
        self.bundle, self.kw = bundle, kw

    def __enter__(self) -> Path:
        import shutil
        import tempfile

        from train.export import rewrite_card

        self.dir = tempfile.mkdtemp()
        path = Path(self.dir) / self.bundle.name
        shutil.copy(self.bundle, path)
        b = load_bundle(path)
        rewrite_card(path, b.module, {**b.card, "decoder": json.loads(json.dumps(self.kw))})
        return path

    def __exit__(self, *exc) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def markdown(rows: list[dict]) -> str:
    L = ["| task | bundle | look-ahead | decoder delay | algorithmic latency | valid | synthetic test | dev-real |",
         "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        dev = r.get("dev_real")
        L.append(f"| {r['task']} ({HEADLINE[r['task']]}) | {r['bundle']} | {r['lookahead']:+d} | {r['delay']} | "
                 f"{r['latency_ms']:.0f} ms | {r['valid']:.3f} | {r['test']:.3f} | {'—' if dev is None else f'{dev:.3f}'} |")
    return "\n".join(L)


def latency_command(args) -> None:
    rows = []
    for b in args.bundles:
        rows += rows_for(Path(b), Path(args.data), Path(args.dev_real) if args.dev_real else None)
        print(markdown(rows[-3:]), flush=True)
    md = markdown(rows)
    print(md)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
