"""``python -m train``: data, evaluate, fit, lottery, report, sweep, ship, peers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgemir.errors import UserError
from edgemir.labels import TASKS


def _task(s: str) -> str:
    if s not in TASKS:
        raise argparse.ArgumentTypeError(f"unknown task {s!r} (choose from {', '.join(TASKS)})")
    return s


def _peer_task(s: str) -> str:
    if s not in ("pitch", "onset"):
        raise argparse.ArgumentTypeError(f"no peers for {s!r} (pitch, onset)")
    return s


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description="edgemir train-and-trim")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("data", help="render labelled audio for one task and split")
    d.add_argument("--task", type=_task, required=True)
    d.add_argument("--split", choices=["train", "valid", "test"], required=True)
    d.add_argument("--minutes", type=float, required=True)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--soundfont", type=Path)
    d.add_argument("--generator", type=int, choices=[2, 3, 4, 5, 6], default=6,
                   help="generator version (2: GM banks only, before December 2026; 3: singers, amps, real kits, "
                        "bands; 4: as 3, drums with a quarter of the items drum-free; 5: as 4, instrument players' "
                        "expression and strummed guitars; 6: as 5, half the singers are recorded voices sung at the "
                        "melody)")

    e = sub.add_parser("evaluate", help="score estimates against references (mir_eval)")
    e.add_argument("--task", type=_task, required=True)
    e.add_argument("--ref", type=Path, required=True)
    e.add_argument("--est", type=Path, required=True)
    e.add_argument("--json", type=Path, help="write per-item scores here")

    f = sub.add_parser("fit", help="train a dense model")
    f.add_argument("--task", type=_task, required=True)
    f.add_argument("--data", type=Path, required=True, help="folder with train/ valid/ test/")
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--epochs", type=int, default=30)
    f.add_argument("--batch", type=int, default=32)
    f.add_argument("--lr", type=float, default=1e-3)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--width", type=float, default=1.0, help="model width multiplier")
    f.add_argument("--lookahead", type=int,
                   help="frames the net sees past each frame (default: the task's; >= -3 centred, 0 causal)")
    f.add_argument("--framing", help="N_FFT:RIGHT, the window length and how many samples it reaches past its "
                                     "frame (default: the task's; e.g. 512:120 the causal framing, 1024:512 centred)")
    f.add_argument("--threads", type=int, default=1, help="torch threads (1: run several fits side by side)")

    lt = sub.add_parser("lottery", help="iterative pruning with rewinding (trim or mask)")
    lt.add_argument("--task", type=_task, required=True)
    lt.add_argument("--data", type=Path, required=True)
    lt.add_argument("--out", type=Path, required=True)
    lt.add_argument("--mode", choices=["trim", "mask"], default="trim")
    lt.add_argument("--criterion", choices=["magnitude", "batchnorm", "activation", "information"],
                    default="magnitude")
    lt.add_argument("--scope", choices=["global", "local"], default="global")
    lt.add_argument("--reset", choices=["rewind", "reinit", "finetune"], default="rewind")
    lt.add_argument("--rounds", type=int, default=10)
    lt.add_argument("--rate", type=float, default=0.2)
    lt.add_argument("--rewind-epoch", type=int, default=1)
    lt.add_argument("--epochs", type=int, default=20)
    lt.add_argument("--batch", type=int, default=32)
    lt.add_argument("--lr", type=float, default=1e-3)
    lt.add_argument("--seed", type=int, default=0)
    lt.add_argument("--width", type=float, default=1.0)
    lt.add_argument("--min-keep", type=float, default=0.0,
                    help="every layer keeps at least this fraction of its dense width (trim; default: 2 units)")
    lt.add_argument("--distill", type=float, default=0.0,
                    help="weight of the dense parent's soft outputs in each round's loss (0: off, 1: only them)")
    lt.add_argument("--trim-output-stage", action="store_true",
                    help="also trim a salience net's last conv layer (kept whole by default), its units weighed by "
                         "the head's weight on them; use with --scope local (a global cutoff removed every unit the "
                         "head weighs positively)")
    lt.add_argument("--target", type=float, default=0.0,
                    help="stop at the round that removes this fraction of the dense parameters, landing on it "
                         "(0: run all --rounds)")
    lt.add_argument("--init-from", type=Path,
                    help="a finished `train fit` run to use as round 0 (same settings), or a trimmed bundle (.ts) "
                         "whose trimming to continue (--mode trim --reset finetune)")

    for sp in (f, lt):
        sp.add_argument("--steps", type=int, default=150, help="batches per epoch")
        sp.add_argument("--limit", type=int, default=None, help="use at most this many items per split")
        if sp is lt:
            sp.add_argument("--threads", type=int, default=1)

    dm = sub.add_parser("demo", help="render the demo clip played when no input device exists")
    dm.add_argument("--out", type=Path, default=Path("edgemir/data/demo.wav"))

    sh = sub.add_parser("ship", help="pick, copy and document the bundles to ship from lottery runs")
    sh.add_argument("runs", nargs="*", type=Path)
    sh.add_argument("--refresh", default="", help="comma-separated shipped tasks whose bundle was re-tuned in place "
                    "(`train retune`): their rows are re-read from the card and re-measured")
    sh.add_argument("--out", type=Path, default=Path("edgemir/models"))
    sh.add_argument("--results", type=Path, default=Path("docs/results.md"))
    sh.add_argument("--dev-real", type=Path, default=Path("../shared/dev-real"))
    sh.add_argument("--data-root", type=Path, default=Path("data"), help="holds <task>/test (checked via analyze)")

    bd = sub.add_parser("bench-data", help="time the rendering of M minutes per task")
    bd.add_argument("--minutes", type=float, default=10.0)

    sw = sub.add_parser("sweep", help="many lottery runs: tasks x modes x criteria x scopes x resets x seeds")
    sw.add_argument("--tasks", required=True, help="comma-separated tasks")
    sw.add_argument("--modes", default="trim")
    sw.add_argument("--criteria", default="batchnorm")
    sw.add_argument("--scopes", default="global")
    sw.add_argument("--resets", default="rewind")
    sw.add_argument("--seeds", default="0")
    for k, t in (("rounds", int), ("rate", float), ("epochs", int), ("steps", int), ("width", float),
                 ("rewind-epoch", int), ("limit", int), ("min-keep", float), ("distill", float),
                 ("target", float)):
        sw.add_argument(f"--{k}", type=t, help="passed to every run")
    rp = sub.add_parser("reproduce", help="render data and rerun the shipped recipes (train/recipes), then ship")
    rp.add_argument("--tasks", help="comma-separated (default: all five)")
    for sp in (sw, rp):
        sp.add_argument("--data-root", type=Path, default=Path("data"), help="holds <task>/{train,valid,test}")
        sp.add_argument("--runs-root", type=Path, default=Path("runs"))
        sp.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
        sp.add_argument("--dry-run", action="store_true", help="print the command lines only")

    am = sub.add_parser("amend-card", help="correct descriptive card fields of written bundles (not measured ones)")
    am.add_argument("bundles", nargs="+", type=Path)
    am.add_argument("--set", dest="changes", action="append", required=True, metavar="KEY=VALUE")
    am.add_argument("--reason", required=True)

    re_ = sub.add_parser("realeval", help="score bundles on the real recordings of ../shared/dev-real (per category)")
    re_.add_argument("bundles", nargs="*", type=Path, help="bundle files or folders (default: the shipped bundles)")
    re_.add_argument("--dev-real", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "dev-real")
    re_.add_argument("--out", type=Path, help="write realeval.json and realeval.md here")

    la = sub.add_parser("latency", help="look-ahead x decoder delay x score table (synthetic test and dev-real)")
    la.add_argument("bundles", nargs="+", type=Path)
    la.add_argument("--data", type=Path, default=Path("data"), help="holds TASK/valid (tuning) and TASK/test")
    la.add_argument("--dev-real", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "dev-real")
    la.add_argument("--out", type=Path, help="write the rows as JSON here")

    rz = sub.add_parser("upgrade", help="bring older bundles to the current format (same weights and card)")
    rz.add_argument("bundles", nargs="+", type=Path)

    rt = sub.add_parser("retune", help="re-tune written bundles' decoder settings on valid and re-measure their scores")
    rt.add_argument("bundles", nargs="+", type=Path)
    rt.add_argument("--data", type=Path, required=True, help="the task's data folder (valid/ and test/)")
    rt.add_argument("--reason", required=True)
    rt.add_argument("--align", action="store_true",
                    help="also tune the frame outputs are stamped with (the card's look-ahead) on valid")

    rs = sub.add_parser("rescore", help="re-score every round of lottery runs on their task's (new) test split")
    rs.add_argument("runs", nargs="+", type=Path)
    rs.add_argument("--data", type=Path, required=True, help="the task's data folder (its test/ is scored)")
    rs.add_argument("--reason", required=True)

    pe = sub.add_parser("peers", help="score and time other tools (aubio, librosa) like the shipped bundles")
    pe.add_argument("--data", type=Path, default=Path("data"), help="folder with TASK/valid and TASK/test")
    pe.add_argument("--dev-real", type=Path, help="shared/dev-real, scored too when given")
    pe.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[1] / "edgemir" / "models")
    pe.add_argument("--tasks", type=lambda s: [_peer_task(t) for t in s.split(",")], default=["pitch", "onset"])
    pe.add_argument("--out", type=Path, required=True)

    r = sub.add_parser("report", help="table and figures from lottery runs")
    r.add_argument("runs", nargs="+", type=Path)
    r.add_argument("--out", type=Path, required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "data":
            from train.generate import write_dataset

            m = write_dataset(args.task, args.split, args.minutes, args.seed, args.out, args.soundfont,
                              version=args.generator)
            print(f"wrote {len(m['items'])} items ({m['minutes']:.1f} min) to {args.out}")
        elif args.cmd == "evaluate":
            from train.metrics import evaluate_folders

            res = evaluate_folders(args.task, args.ref, args.est)
            print(json.dumps(res["summary"], indent=1))
            if args.json:
                args.json.write_text(json.dumps(res, indent=1, default=str))
        elif args.cmd == "fit":
            from train.fit import fit_command

            fit_command(args)
        elif args.cmd == "lottery":
            from train.lottery import lottery_command

            lottery_command(args)
        elif args.cmd == "demo":
            from train.generate import render_demo

            print(render_demo(args.out))
        elif args.cmd == "ship":
            from train.ship import ship_command

            ship_command(args)
        elif args.cmd == "bench-data":
            from train.generate import bench_render

            bench_render(args.minutes)
        elif args.cmd in ("sweep", "reproduce"):
            from train import sweep

            return (sweep.sweep_command if args.cmd == "sweep" else sweep.reproduce_command)(args)
        elif args.cmd == "amend-card":
            from train.export import amend_card

            pairs = [c.partition("=") for c in args.changes]
            if any(not k or not eq for k, eq, _ in pairs):
                raise UserError("--set takes KEY=VALUE")
            for b in args.bundles:
                amend_card(b, {k: v for k, _, v in pairs}, args.reason)
                print(f"amended {b}")
        elif args.cmd == "realeval":
            from train.realeval import realeval_command

            realeval_command(args)
        elif args.cmd == "latency":
            from train.latency import latency_command

            latency_command(args)
        elif args.cmd == "upgrade":
            from train.export import upgrade

            for b in args.bundles:
                card = upgrade(b)
                print(f"upgraded {b}: format {card['format_version']}, {card['bytes']} bytes")
        elif args.cmd == "retune":
            from train.retune import retune

            for b in args.bundles:
                card = retune(b, args.data, args.reason, args.align)
                print(f"retuned {b}: decoder {card['decoder']}, look-ahead {card['lookahead']:+d}, "
                      f"test {json.dumps(card['scores']['test'])}")
        elif args.cmd == "rescore":
            from train.retune import rescore_run

            for run in args.runs:
                done = rescore_run(run, args.data, args.reason)
                print(f"rescored {len(done['rounds'])} rounds of {run} on {done['test_split']['items']} test items")
        elif args.cmd == "peers":
            from train.peers import peers_command

            peers_command(args)
        elif args.cmd == "report":
            from train.report import report_command

            report_command(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
