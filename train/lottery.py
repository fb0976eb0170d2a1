"""Lottery tickets with late rewinding: train dense, then per round rank, remove ``rate`` of what
remains (whole units for ``trim``; for ``mask``, single weights by magnitude as Frankle & Carbin, or with
another criterion the units ``trim`` would remove, silenced by masks), rewind survivors to their epoch-k
values (or re-initialise them, or keep their trained values: ``finetune``, the classic
prune-then-fine-tune control of Renda et al. 2020), retrain (optionally distilling the dense
parent's outputs, ``--distill``), evaluate and export a bundle. With ``--target F`` the run stops
at the round that removes F of the dense parameters, and that round removes only what reaches F.
Resumable per round."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from pathlib import Path

import torch
from rich.console import Console

from edgemir.errors import UserError
from edgemir.frontend import CENTRED, Framing
from edgemir.tasks import HEADLINE, REGISTRY
from train.dataset import Batcher, training_data
from train.export import export, rebuilt
from train.fit import apply_masks, fit_framing, load_data, seed_all, train_epochs, tune_and_score
from train.nets import FrameNet, NetConfig, build, count_nonzero, count_params, net_framing
from train.sweep import run_name
from train.trim import (
    apply_plan,
    as_groups,
    dense_widths,
    importance,
    landing_rate,
    mask_landing_rate,
    masked_units,
    plan,
    unit_masks,
    update_masks,
    width_floor,
    without_masked,
)

# what a `train fit` parent must share with the lottery run that starts from it (not epochs or steps)
PARENT_SETTINGS = ("task", "batch", "lr", "seed", "width")
console = Console(stderr=True)


def git_head() -> str:
    """The trainer's commit, recorded per round (a run may resume under a newer commit)."""
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                           cwd=Path(__file__).parent, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
        return (r.stdout.strip() + ("+changes" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _net_from(cfg: dict, state: dict | None = None) -> FrameNet:
    net = FrameNet(NetConfig(**cfg))
    if state is not None:
        net.load_state_dict(state)
    return net


def dense_teacher(st: dict) -> FrameNet:
    """``--distill``: the run's dense round-0 model, frozen, whose outputs the trimmed rounds learn.
    (A run from before --distill cannot get here: its settings say distill 0, so ``load`` refuses it.)"""
    net = _net_from(st["dense"]["cfg"], st["dense"]["state"]).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class LotteryRun:
    def __init__(self, args) -> None:
        self.a = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "bundles").mkdir(exist_ok=True)
        self.state_path = self.out / "state.pt"
        self.results_path = self.out / "rounds.json"
        self.commit = git_head()  # the code this process imported, recorded with every round
        self.name = run_name(args.task, args.mode, args.criterion, args.scope, args.reset, args.seed, args.min_keep,
                             args.distill, args.target)
        if not 0 < args.rate < 1:
            raise UserError("--rate must be in (0, 1)")
        if not 0 <= args.min_keep < 1:
            raise UserError("--min-keep must be in [0, 1)")
        if not 0 <= args.distill <= 1:
            raise UserError("--distill must be in [0, 1]")
        if not 0 <= args.target < 1:
            raise UserError("--target must be in [0, 1) (a fraction of the dense parameters; 0: off)")

    def settings(self) -> dict:
        a = self.a
        keys = ("task", "mode", "criterion", "scope", "reset", "rounds", "rate", "rewind_epoch", "epochs", "batch",
                "lr", "seed", "width", "steps", "min_keep", "distill", "target", "trim_output_stage")
        parent = getattr(a, "init_from", None)
        return {k: getattr(a, k) for k in keys} | {"init_from": str(parent) if parent else None}

    # -- persistence -------------------------------------------------------------------------
    def save(self, st: dict) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(st, tmp)
        tmp.replace(self.state_path)
        self.results_path.write_text(json.dumps({"settings": self.settings(), "rounds": st["results"]}, indent=1))

    def load(self) -> dict | None:
        if not self.state_path.exists():
            return None
        st = torch.load(self.state_path, weights_only=True)
        now = self.settings()
        st["settings"].setdefault("min_keep", 0.0)  # runs from before --min-keep
        st["settings"].setdefault("trim_output_stage", False)  # and before --trim-output-stage
        st["settings"].setdefault("distill", 0.0)  # runs from before --distill
        st["settings"].setdefault("target", 0.0)  # runs from before --target
        diff = [f"--{k.replace('_', '-')} {v} (asked {now.get(k)})" for k, v in st["settings"].items()
                if k != "rounds" and now.get(k) != v]
        if diff:
            raise UserError(f"{self.out}: holds a run with {', '.join(diff)}; use another --out (only --rounds may grow)")
        st["settings"] = self.settings()
        return st

    # -- evaluation and export ---------------------------------------------------------------
    def record(self, st: dict, net: FrameNet, rnd: int, data: dict, train_info: dict, t0: float,
               rate: float = 0.0) -> None:
        task = self.a.task
        kw, valid = tune_and_score(task, net, data["valid"])
        _, test = tune_and_score(task, net, data["test"], kw)
        params = count_params(net)
        nonzero = count_nonzero(net)
        dense = st["dense_params"] or params
        remaining = (params if self.a.mode == "trim" else nonzero) / dense
        info = {"round": rnd, "mode": "dense" if rnd == 0 else self.a.mode, "criterion": self.a.criterion,
                "scope": self.a.scope, "reset": self.a.reset, "seed": self.a.seed, "rewind_epoch": self.a.rewind_epoch,
                "min_keep": self.a.min_keep, "distill": self.a.distill, "rate": rate, "target": self.a.target,
                "fraction_removed": round(1 - remaining, 4), "dense_params": dense,
                "scores": {"valid": valid, "test": test}, "train_seconds": round(time.time() - t0, 1),
                "training_data": training_data(self.a.data)}
        if self.a.trim_output_stage:
            info["trim_output_stage"] = True
        if "dense_fit" in train_info:  # round 0 came from a `train fit` run
            info["dense_fit"] = train_info["dense_fit"]
        path = self.out / "bundles" / f"{task}-{self.a.mode}-r{rnd:02d}.ts"
        card = export(task, net, path, info, decoder=kw)
        row = {"round": rnd, "params": params, "nonzero_params": nonzero, "remaining": round(remaining, 4),
               "fraction_removed": info["fraction_removed"], "flops_per_second": card["flops_per_second"],
               "bytes": card["bytes"], "latency_ms_p50": card["latency_ms_per_hop"]["p50"],
               "valid": HEADLINE[task] and valid[HEADLINE[task]],
               "test": test[HEADLINE[task]], "test_all": test, "decoder": kw, "bundle": str(path.name),
               "rate": rate, "best_epoch": train_info.get("best_epoch"), "seconds": info["train_seconds"],
               "commit": self.commit}
        if "dense_fit" in info:
            row["dense_fit"] = info["dense_fit"]
        st["results"].append(row)
        console.log(f"{self.name} round {rnd}: {params} params ({nonzero} non-zero), removed "
                    f"{row['fraction_removed']:.1%}, test {HEADLINE[task]} {row['test']:.3f}")

    def dense_from_fit(self, run: Path) -> tuple[FrameNet, dict, dict]:
        """Round 0 from a finished ``train fit`` run (its best weights and its epoch-k checkpoint)
        instead of training the dense model here. Model, seed and optimiser must match this run's;
        the parent may have trained for more epochs than each round (a converged dense model)."""
        a = self.a
        try:
            m = json.loads((run / "metrics.json").read_text())
            best = torch.load(run / "best.pt", weights_only=True)
            rewind = torch.load(run / "ckpt" / f"epoch{a.rewind_epoch:03d}.pt", weights_only=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise UserError(f"{run}: not a finished fit run with an epoch-{a.rewind_epoch} checkpoint ({e})") from None
        fit = m.get("settings", {})
        diff = [k for k in PARENT_SETTINGS if fit.get(k) != getattr(a, k)]
        if diff:
            raise UserError(f"{run}: fit settings differ from this run's in {', '.join(diff)}")
        # a trade-off study's parent keeps its look-ahead, and a parent trained before its task changed framing
        # keeps its framing
        net = build(a.task, a.width, fit.get("lookahead"), fit_framing(fit))
        net.load_state_dict(best)
        parent = {"run": str(run), "epochs": fit.get("epochs"), "steps": fit.get("steps"), "best_epoch": m.get("best_epoch")}
        return net, rewind, {"best_epoch": m.get("best_epoch"), "fit_seconds": float(m.get("train_seconds", 0)),
                             "dense_fit": parent}

    def from_bundle(self, path: Path) -> tuple[FrameNet, dict, dict]:
        """Round 0 from a trimmed bundle (its lineage continued): its network and weights are the starting
        point, the teacher of ``--distill`` and the rewind point; fractions removed, ``--target`` and
        ``--min-keep`` stay relative to the dense parent the bundle was trimmed from (the task's full-width
        network, as its card records)."""
        if getattr(self, "_start", None) is None:  # (the framing is asked before the data loads: rebuilt once)
            self._start = self._from_bundle(path)
        net, state, info = self._start
        return net, copy.deepcopy(state), info

    def _from_bundle(self, path: Path) -> tuple[FrameNet, dict, dict]:
        a = self.a
        if a.mode != "trim" or a.reset != "finetune":
            raise UserError("--init-from a bundle continues its trimming: it needs --mode trim --reset finetune")
        _, card, model = rebuilt(path)
        if card["task"] != a.task:
            raise UserError(f"{path}: a {card['task']} bundle, not {a.task}")
        net = model.net
        full = build(a.task, a.width, int(net.cfg_dict["lookahead"]), net_framing(net))
        if card.get("dense_params") != count_params(full):
            raise UserError(f"{path}: its card's dense parent had {card.get('dense_params')} parameters, the "
                            f"{a.task} network at --width {a.width:g} has {count_params(full)}")
        state = copy.deepcopy(net.state_dict())
        parent = {"bundle": str(path), "fraction_removed": card.get("fraction_removed"),
                  "round": card.get("round"), "weights_sha256": card.get("weights_sha256")}
        return net, state, {"best_epoch": None, "fit_seconds": float(card.get("train_seconds", 0)),
                            "dense_fit": parent, "dense_params": int(card["dense_params"]),
                            "dense_widths": dense_widths(full)}

    def framing(self, st: dict | None) -> Framing:
        """The spectra the run's nets read: a resumed run's, its ``train fit`` parent's, or the task spec's."""
        if st is not None:
            return Framing(int(st["cfg"].get("n_fft", CENTRED.n_fft)), int(st["cfg"].get("right", CENTRED.right)))
        if getattr(self.a, "init_from", None):
            if Path(self.a.init_from).suffix == ".ts":  # (also checks the bundle before the data loads)
                return net_framing(self.from_bundle(Path(self.a.init_from))[0])
            try:
                return fit_framing(json.loads((Path(self.a.init_from) / "metrics.json").read_text()).get("settings", {}))
            except (OSError, ValueError):
                pass  # dense_from_fit says what is wrong with the parent
        return Framing.of(REGISTRY[self.a.task].features)

    def floor(self, st: dict) -> dict | None:
        """``--min-keep``: every layer keeps that fraction of its dense width."""
        if not self.a.min_keep:
            return None
        if "dense_widths" not in st:
            raise UserError(f"{self.out}: this run predates --min-keep (no dense widths recorded)")
        return width_floor(st["dense_widths"], self.a.min_keep)

    def goal(self, st: dict) -> int | None:
        """``--target``: the most parameters (non-zero ones for ``mask``) the last round may keep."""
        return int((1 - self.a.target) * st["dense_params"]) if self.a.target else None

    def reached(self, st: dict) -> bool:
        last = st["results"][-1]
        kept = last["params"] if self.a.mode == "trim" else last["nonzero_params"]
        return self.goal(st) is not None and kept <= self.goal(st)

    def calibration(self, data: dict, net: FrameNet) -> list | None:
        """Unaugmented training batches for the activation and information criteria."""
        if self.a.criterion not in ("activation", "information"):
            return None
        cb = Batcher(self.a.task, data["train"], net.receptive_field, net.lookahead, augment=False, seed=self.a.seed)
        return [cb.sample(32) for _ in range(4)]

    # -- the loop ----------------------------------------------------------------------------
    def go(self) -> None:
        a = self.a
        torch.set_num_threads(a.threads)
        seed_all(a.seed)
        st = self.load()
        data = load_data(a.task, a.data, a.limit, self.framing(st))
        if st is None:
            t0 = time.time()
            if getattr(a, "init_from", None) and Path(a.init_from).suffix == ".ts":
                net, rewind, info = self.from_bundle(Path(a.init_from))
                t0 -= info["fit_seconds"]
            elif getattr(a, "init_from", None):
                net, rewind, info = self.dense_from_fit(Path(a.init_from))
                t0 -= info["fit_seconds"]  # the card's training time counts the fit
            else:
                net = build(a.task, a.width)
                init = copy.deepcopy(net.state_dict())
                b = Batcher(a.task, data["train"], net.receptive_field, net.lookahead, seed=a.seed)
                net, info = train_epochs(a.task, net, b, data["valid"], a.epochs, a.lr, a.batch,
                                         keep_epochs=(a.rewind_epoch,), label=f"{self.name} dense", steps=a.steps)
                rewind = info["saved"].get(a.rewind_epoch, init if a.rewind_epoch == 0 else net.state_dict())
            st = {"settings": self.settings(), "round": 0, "cfg": copy.deepcopy(net.cfg_dict),
                  "net": net.state_dict(), "rewind": rewind, "rewind_cfg": copy.deepcopy(net.cfg_dict),
                  "masks": None, "dense_params": info.get("dense_params"),
                  "dense_widths": info.get("dense_widths") or dense_widths(net), "results": [],
                  "dense": {"cfg": copy.deepcopy(net.cfg_dict), "state": copy.deepcopy(net.state_dict())}}
            self.record(st, net, 0, data, info, t0)
            if st["dense_params"] is None:
                st["dense_params"] = st["results"][0]["params"]
                st["results"][0]["remaining"] = 1.0
            self.save(st)
        teacher = dense_teacher(st) if a.distill else None
        for rnd in range(st["round"] + 1, a.rounds + 1):
            if self.reached(st):
                console.log(f"{self.name}: round {st['round']} reached --target {a.target:g}; no further rounds")
                break
            t0 = time.time()
            seed_all(a.seed * 1000 + rnd)
            trained = _net_from(st["cfg"], st["net"]).eval()
            b = Batcher(a.task, data["train"], trained.receptive_field, trained.lookahead, seed=a.seed + rnd)
            masks = None
            if a.mode == "trim":
                scores, floor = importance(trained, a.criterion, self.calibration(data, trained), a.task,
                                           a.trim_output_stage), self.floor(st)
                rate = a.rate if not a.target else landing_rate(trained, scores, a.rate, a.scope, self.goal(st),
                                                                floor=floor)
                removal = plan(trained, scores, rate, a.scope, floor=floor)
                rew = _net_from(st["rewind_cfg"], st["rewind"])
                apply_plan(rew, removal)
                # a copy: training ``net`` below must not move the epoch-k weights kept for the next round
                st["rewind"], st["rewind_cfg"] = copy.deepcopy(rew.state_dict()), copy.deepcopy(rew.cfg_dict)
                if a.reset == "rewind":
                    net = rew
                elif a.reset == "reinit":
                    net = _net_from(rew.cfg_dict)
                else:  # finetune: keep training the trimmed survivors from where the last round ended
                    net = trained
                    apply_plan(net, removal)
            elif a.criterion != "magnitude":  # the trim plan, made on the survivors, applied as masks
                alive = without_masked(trained, st.get("units"))
                scores, floor = importance(alive, a.criterion, self.calibration(data, alive), a.task,
                                           a.trim_output_stage), self.floor(st)
                rate = a.rate if not a.target else landing_rate(alive, scores, a.rate, a.scope, self.goal(st),
                                                                floor=floor)
                st["units"] = masked_units(plan(alive, scores, rate, a.scope, floor=floor), st.get("units"),
                                           st["dense_widths"])
                masks = unit_masks(trained, as_groups(st["units"]))
                start = {"rewind": (st["rewind_cfg"], st["rewind"]), "reinit": (st["rewind_cfg"], None),
                         "finetune": (st["cfg"], st["net"])}[a.reset]
                net = _net_from(*start)
                apply_masks(net, masks)
            else:
                rate = a.rate if not a.target else mask_landing_rate(trained, st["masks"], a.rate, self.goal(st))
                masks = update_masks(trained, st["masks"], rate)
                start = {"rewind": (st["rewind_cfg"], st["rewind"]), "reinit": (st["rewind_cfg"], None),
                         "finetune": (st["cfg"], st["net"])}[a.reset]
                net = _net_from(*start)
                apply_masks(net, masks)
            net, info = train_epochs(a.task, net, b, data["valid"], a.epochs, a.lr, a.batch, masks=masks,
                                     label=f"{self.name} round {rnd}", steps=a.steps, teacher=teacher,
                                     distill=a.distill)
            st["round"], st["cfg"], st["net"], st["masks"] = rnd, copy.deepcopy(net.cfg_dict), net.state_dict(), masks
            self.record(st, net, rnd, data, info, t0, rate)
            self.save(st)


def lottery_command(args) -> None:
    LotteryRun(args).go()


