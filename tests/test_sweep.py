"""Sweeps and recipes: the right independent runs, one command line each."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemir.errors import UserError
from edgemir.labels import TASKS
from train.sweep import Job, load_recipe, recipe_jobs, sweep_jobs


def test_sweep_is_the_cartesian_product_and_mask_runs_collapse():
    jobs = sweep_jobs(["onset", "chord"], ["trim", "mask"], ["magnitude", "batchnorm", "activation", "information"],
                      ["global", "local"], ["rewind", "reinit"], [0, 1, 2], {"epochs": 3, "rate": None})
    trim = [j for j in jobs if j.mode == "trim"]
    mask = [j for j in jobs if j.mode == "mask"]
    assert len(trim) == 2 * 4 * 2 * 2 * 3
    assert len(mask) == 2 * 2 * 3 and {j.criterion for j in mask} == {"magnitude"}
    assert len({j.name for j in jobs}) == len(jobs)  # every run has its own folder
    argv = jobs[0].argv(Path("d"), Path("r"))
    assert argv[argv.index("--epochs") + 1] == "3" and "--rate" not in argv


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_a_valid_recipe(task):
    r = load_recipe(task)
    assert r["task"] == task and set(r["data"]["minutes"]) == {"train", "valid", "test"}
    # the data is rendered with the generator the shipped bundle was trained on (not the newest default)
    from train.sweep import ensure_data

    cmds = ensure_data(task, Path("/nonexistent"))
    cmd = cmds[0]
    for c in cmds:  # (a split may keep an older generator's audio: `<split>_generator`)
        split = c[c.index("--split") + 1]
        assert c[c.index("--generator") + 1] == str(r["data"].get(f"{split}_generator", r["data"]["generator"]))
    assert build_parser_ok(cmd[3:])
    jobs = recipe_jobs(task)
    assert jobs and all(j.task == task for j in jobs)
    # the lottery parser accepts every option the recipe passes
    from train.__main__ import build_parser

    build_parser().parse_args(jobs[0].argv(Path("d"), Path("r"))[3:])


def build_parser_ok(argv: list[str]) -> bool:
    from train.__main__ import build_parser

    return build_parser().parse_args(argv).cmd == "data"


def test_a_recipe_fit_trains_the_parent_that_the_lottery_starts_from():
    from train.__main__ import build_parser

    job = Job("instrument", "trim", "batchnorm", "global", "finetune", 0, (("epochs", "12"), ("width", "1.0")),
              (("epochs", "40"), ("steps", "100")))
    fit = build_parser().parse_args(job.fit_argv(Path("d"), Path("r"))[3:])
    lot = build_parser().parse_args(job.argv(Path("d"), Path("r"))[3:])
    assert fit.cmd == "fit" and fit.epochs == 40 and fit.seed == lot.seed and fit.width == lot.width
    assert lot.init_from == fit.out and lot.epochs == 12
    assert Job("onset", "trim", "batchnorm", "global", "finetune", 0, ()).fit_argv(Path("d"), Path("r")) is None


def test_unknown_recipe_is_a_user_error():
    with pytest.raises(UserError):
        load_recipe("tuba")


def _round(k, removed, test, kb=100):
    return {"round": k, "fraction_removed": removed, "params": int(1000 * (1 - removed)), "test": test,
            "bytes": kb * 1024}


def test_ship_picks_the_smallest_bundle_within_one_point_else_says_missed():
    from train.ship import pick

    run = {"rounds": [_round(0, 0.0, 0.80, 900), _round(1, 0.5, 0.805), _round(2, 0.75, 0.795), _round(3, 0.9, 0.70)]}
    dense, chosen, met = pick(run)
    assert dense["round"] == 0 and chosen["round"] == 2 and met  # 0.795 is within 1 pt, 0.70 is not
    for r, t in zip(run["rounds"][1:], (0.76, 0.78, 0.775)):
        r["test"] = t
    dense, chosen, met = pick(run)
    assert not met and chosen["round"] == 3  # none within 1 pt of dense: the smallest within 1 pt of the best


def test_ship_rule_holds_on_dev_real_too():
    """A round within 1 pt of dense on the synthetic split but 3 pt behind it on real recordings is not shipped."""
    from train.ship import pick

    run = {"rounds": [_round(0, 0.0, 0.80, 900), _round(1, 0.5, 0.805), _round(2, 0.75, 0.800), _round(3, 0.9, 0.799)]}
    dense, chosen, met = pick(run, {0: 0.90, 1: 0.91, 2: 0.895, 3: 0.87})
    assert met and chosen["round"] == 2
    dense, chosen, met = pick(run, {0: 0.90, 1: 0.85, 2: 0.86, 3: 0.87})  # all lose on dev-real
    assert not met and chosen["round"] == 3  # the smallest within 1 pt of the best on both
    assert pick(run)[1]["round"] == 3  # without dev-real scores: the synthetic rule alone


def test_results_commands_reproduce_min_keep_retune_and_rescore():
    from train.ship import results_markdown

    def rnd(k, removed, test):
        return {**_round(k, removed, test), "flops_per_second": 1e6, "latency_ms_p50": 0.1}

    settings = {"task": "drums", "mode": "trim", "criterion": "batchnorm", "scope": "global", "reset": "finetune",
                "rounds": 2, "rate": 0.2, "rewind_epoch": 1, "epochs": 6, "steps": 120, "width": 1.0, "seed": 0}
    row = {"task": "drums", "run": "runs/d", "settings": {**settings, "min_keep": 0.25, "distill": 0.5},
           "dense": rnd(0, 0.0, 0.8), "shipped": rnd(2, 0.9, 0.8), "within_1pt": True, "removed_90": True,
           "analyze_test": None, "dev_real_dense": None, "dev_real_shipped": None,
           "retuned": ["runs/d/bundles/drums-trim-r02.ts"], "rescored": True}
    md = results_markdown([row])
    assert "--seed 0 --min-keep 0.25 --distill 0.5" in md
    assert "python -m train retune runs/d/bundles/drums-trim-r02.ts --data data/drums" in md
    assert "python -m train rescore runs/d --data data/drums" in md
    assert "--align" not in md
    md = results_markdown([{**row, "aligned": ["runs/d/bundles/drums-trim-r02.ts"]}])  # retuned with --align
    assert "python -m train retune runs/d/bundles/drums-trim-r02.ts --data data/drums --align" in md
    assert md.count("train retune") == 1
    md = results_markdown([{**row, "settings": settings, "retuned": [], "rescored": False}])  # older rows: neither
    assert "--min-keep" not in md and "--distill" not in md and "retune" not in md and "train fit" not in md
    assert "rescore" not in md
    parent = {"run": "runs/d-fit", "epochs": 40, "steps": 100, "best_epoch": 30}
    md = results_markdown([{**row, "dense_fit": parent}])
    assert "python -m train fit --task drums --data data/drums --out runs/d-fit --epochs 40 --steps 100" in md
    assert "--init-from runs/d-fit" in md
    md = results_markdown([{**row, "dense_fit": parent, "data": "data-g6/drums"}])  # shipped from another data root
    assert "python -m train fit --task drums --data data-g6/drums --out runs/d-fit" in md
    assert "python -m train lottery --task drums --data data-g6/drums --out runs/d" in md
    assert "data/drums" not in md


def test_a_continued_lineage_keeps_its_dense_parent_and_shows_what_it_continued():
    """``train lottery --init-from BUNDLE.ts`` then ``train ship``: round 0 is the bundle shipped before, so the
    row keeps the lineage's dense parent, shows the continued bundle as a step of its own, and both lottery
    commands."""
    from train.ship import continued, results_markdown

    def rnd(k, removed, test):
        return {**_round(k, removed, test), "flops_per_second": 1e6, "latency_ms_p50": 0.1}

    settings = {"task": "pitch", "mode": "trim", "criterion": "batchnorm", "scope": "global", "reset": "finetune",
                "rounds": 5, "rate": 0.44, "rewind_epoch": 1, "epochs": 4, "steps": 100, "width": 1.0, "seed": 0}
    parent = {"run": "runs/p-fit", "epochs": 8, "steps": 100, "best_epoch": 8}
    before = {"task": "pitch", "run": "runs/p", "settings": settings, "commit": "abc", "dense": rnd(0, 0.0, 0.81),
              "shipped": rnd(4, 0.844, 0.928), "dev_real_dense": {"rpa": 0.85}, "dense_fit": parent}
    start = {"bundle": "edgemir/models/pitch.ts", "fraction_removed": 0.844, "round": 4}
    row = {"task": "pitch", "run": "runs/q", "settings": {**settings, "rounds": 3, "distill": 1.0},
           "dense": {**rnd(0, 0.844, 0.928), "dense_fit": start}, "shipped": rnd(2, 0.903, 0.924),
           "dev_real_dense": {"rpa": 0.918}, "dev_real_shipped": {"rpa": 0.917}, "within_1pt": True,
           "removed_90": True, "analyze_test": None, "dense_fit": None}
    row = continued(row, before)
    assert row["dense"]["fraction_removed"] == 0.0 and row["dev_real_dense"] == {"rpa": 0.85}
    assert row["continued"]["round"]["fraction_removed"] == 0.844 and row["continued"]["dev_real"] == {"rpa": 0.918}
    md = results_markdown([row])
    assert "| pitch (rpa) | continued r0 | 84.4% |" in md and "| pitch (rpa) | dense r0 | 0.0% |" in md
    assert "--out runs/p --mode trim" in md and "--init-from runs/p-fit  # commit abc" in md
    assert "--out runs/q --mode trim" in md and "--distill 1.0" in md
    assert "--init-from edgemir/models/pitch.ts" in md
    with pytest.raises(UserError):  # a bundle SHIPPED.json does not record
        continued(row | {"dense": {**rnd(0, 0.5, 0.9), "dense_fit": start}}, before)
    assert continued({**row, "dense": rnd(0, 0.0, 0.8)}, before)["dense"]["test"] == 0.8  # a plain run: as is
