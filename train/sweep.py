"""Many independent lottery runs from one command: a sweep (tasks x modes x criteria x scopes x
resets x seeds) or the shipped recipes (``train/recipes/<task>.toml``) from scratch.

Each run is its own ``python -m train lottery`` process with its own folder and log, so a run is
resumable on its own and the set maps onto a process pool here, or onto a cluster scheduler
(one command line per job, see ``--dry-run``).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from edgemir.errors import UserError
from edgemir.labels import TASKS

RECIPES = Path(__file__).parent / "recipes"
console = Console(stderr=True)


def run_name(task: str, mode: str, criterion: str, scope: str, reset: str, seed: int, min_keep: float = 0.0,
             distill: float = 0.0, target: float = 0.0) -> str:
    """A lottery run's name (its folder under runs/ in a sweep, its label in logs)."""
    keep = f"-k{min_keep:g}" if min_keep else ""
    kd = f"-kd{distill:g}" if distill else ""
    tg = f"-t{target:g}" if target else ""
    return f"{task}-{mode}-{criterion}-{scope}-{reset}{keep}{kd}{tg}-s{seed}"


@dataclass(frozen=True)
class Job:
    task: str
    mode: str
    criterion: str
    scope: str
    reset: str
    seed: int
    opts: tuple[tuple[str, str], ...]  # other lottery options (width, epochs, rate, ...)
    fit: tuple[tuple[str, str], ...] = ()  # a recipe's [fit]: train the dense parent first (epochs, steps)

    @property
    def name(self) -> str:
        o = dict(self.opts)
        return run_name(self.task, self.mode, self.criterion, self.scope, self.reset, self.seed,
                        float(o.get("min_keep", 0)), float(o.get("distill", 0)), float(o.get("target", 0)))

    def argv(self, data_root: Path, runs_root: Path) -> list[str]:
        a = [sys.executable, "-m", "train", "lottery", "--task", self.task, "--data", str(data_root / self.task),
             "--out", str(runs_root / self.name), "--mode", self.mode, "--criterion", self.criterion,
             "--scope", self.scope, "--reset", self.reset, "--seed", str(self.seed)]
        for k, v in self.opts:
            a += [f"--{k.replace('_', '-')}", v]
        if self.fit:
            a += ["--init-from", str(runs_root / f"{self.name}-fit")]
        return a

    def fit_argv(self, data_root: Path, runs_root: Path) -> list[str] | None:
        """The `train fit` run of the dense parent, when the recipe has one (or None)."""
        if not self.fit:
            return None
        o = dict(self.opts)
        a = [sys.executable, "-m", "train", "fit", "--task", self.task, "--data", str(data_root / self.task),
             "--out", str(runs_root / f"{self.name}-fit"), "--seed", str(self.seed), "--width", o.get("width", "1.0")]
        for k, v in self.fit:
            a += [f"--{k.replace('_', '-')}", v]
        return a


def load_recipe(task: str) -> dict:
    path = RECIPES / f"{task}.toml"
    if not path.is_file():
        raise UserError(f"{path}: no recipe for task {task!r}")
    try:
        r = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: {e}") from None
    for key in ("task", "data", "lottery"):
        if key not in r:
            raise UserError(f"{path}: missing [{key}]")
    if "generator" not in r["data"]:  # the bundle's data: a later generator renders other audio for some tasks
        raise UserError(f"{path}: [data] needs the generator version its bundle was trained on")
    return r


def recipe_jobs(task: str) -> list[Job]:
    r = load_recipe(task)
    lt = dict(r["lottery"])
    fixed = {k: lt.pop(k) for k in ("mode", "criterion", "scope", "reset")}
    seeds = lt.pop("seeds", [0])
    opts = tuple((k, str(v)) for k, v in sorted(lt.items()))
    fit = tuple((k, str(v)) for k, v in sorted(r.get("fit", {}).items()))
    return [Job(task, fixed["mode"], fixed["criterion"], fixed["scope"], fixed["reset"], int(s), opts, fit)
            for s in seeds]


def sweep_jobs(tasks, modes, criteria, scopes, resets, seeds, opts: dict) -> list[Job]:
    o = tuple((k, str(v)) for k, v in sorted(opts.items()) if v is not None)
    jobs = []
    for task, mode, crit, scope, reset, seed in itertools.product(tasks, modes, criteria, scopes, resets, seeds):
        if mode == "mask":  # the unstructured baseline ranks single weights by magnitude, globally
            crit, scope = "magnitude", "global"
        jobs.append(Job(task, mode, crit, scope, reset, seed, o))
    return list(dict.fromkeys(jobs))  # mask runs collapse to one per (task, reset, seed)


def ensure_data(task: str, data_root: Path) -> list[list[str]]:
    """Commands that render a recipe's splits that are missing."""
    r = load_recipe(task)
    cmds = []
    for split, minutes in r["data"]["minutes"].items():
        out = data_root / task / split
        if not (out / "manifest.json").exists():
            cmds.append([sys.executable, "-m", "train", "data", "--task", task, "--split", split, "--minutes",
                         str(minutes), "--seed", str(r["data"].get("seed", 1)), "--out", str(out),
                         "--generator", str(r["data"].get(f"{split}_generator", r["data"]["generator"]))])
    return cmds


def run_all(jobs: list[Job], data_root: Path, runs_root: Path, n_jobs: int, dry_run: bool) -> int:
    logs = runs_root / "logs"
    if dry_run:
        for j in jobs:
            for argv in (j.fit_argv(data_root, runs_root), j.argv(data_root, runs_root)):
                if argv:
                    print(" ".join(argv))
        return 0
    logs.mkdir(parents=True, exist_ok=True)

    def one(j: Job) -> tuple[Job, int]:
        console.log(f"start {j.name}")
        fit = j.fit_argv(data_root, runs_root)
        with open(logs / f"{j.name}.log", "a") as log:
            rc = 0
            if fit and not (runs_root / f"{j.name}-fit" / "metrics.json").is_file():
                rc = subprocess.call(fit, stdout=log, stderr=subprocess.STDOUT)
            if rc == 0:
                rc = subprocess.call(j.argv(data_root, runs_root), stdout=log, stderr=subprocess.STDOUT)
        console.log(f"{'done' if rc == 0 else f'FAILED ({rc})'} {j.name}")
        return j, rc

    with ThreadPoolExecutor(max_workers=max(1, n_jobs)) as pool:
        results = list(pool.map(one, jobs))
    failed = [j.name for j, rc in results if rc]
    if failed:
        console.print(f"[red]{len(failed)} run(s) failed[/]: {', '.join(failed)} (logs in {logs})")
        return 1
    return 0


def _csv(s: str | None, allowed=None) -> list[str]:
    out = [x.strip() for x in (s or "").split(",") if x.strip()]
    if allowed:
        bad = [x for x in out if x not in allowed]
        if bad:
            raise UserError(f"unknown value(s) {', '.join(bad)}; choose from {', '.join(allowed)}")
    return out


def sweep_command(args) -> int:
    tasks = _csv(args.tasks, TASKS)
    jobs = sweep_jobs(tasks, _csv(args.modes, ("trim", "mask")),
                      _csv(args.criteria, ("magnitude", "batchnorm", "activation", "information")),
                      _csv(args.scopes, ("global", "local")), _csv(args.resets, ("rewind", "reinit", "finetune")),
                      [int(s) for s in _csv(args.seeds)],
                      {"rounds": args.rounds, "rate": args.rate, "epochs": args.epochs, "steps": args.steps,
                       "width": args.width, "rewind_epoch": args.rewind_epoch, "limit": args.limit,
                       "min_keep": args.min_keep, "distill": args.distill, "target": args.target})
    console.log(f"{len(jobs)} run(s), {args.jobs} at a time")
    return run_all(jobs, args.data_root, args.runs_root, args.jobs, args.dry_run)


def reproduce_command(args) -> int:
    tasks = _csv(args.tasks, TASKS) if args.tasks else list(TASKS)
    renders = [c for t in tasks for c in ensure_data(t, args.data_root)]
    jobs = [j for t in tasks for j in recipe_jobs(t)]
    if args.dry_run:
        for c in renders:
            print(" ".join(c))
        run_all(jobs, args.data_root, args.runs_root, args.jobs, True)
        print(" ".join([sys.executable, "-m", "train", "ship", *[str(args.runs_root / j.name) for j in jobs]]))
        return 0
    for c in renders:
        if subprocess.call(c):
            raise UserError(f"rendering failed: {' '.join(c)}")
    rc = run_all(jobs, args.data_root, args.runs_root, args.jobs, False)
    if rc:
        return rc
    return subprocess.call([sys.executable, "-m", "train", "ship", *[str(args.runs_root / j.name) for j in jobs]])
