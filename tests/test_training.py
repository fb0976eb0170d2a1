"""Training and lottery runs on tiny rendered data, end to end through the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import run_cli

FAST = ["--epochs", "1", "--steps", "2", "--batch", "4"]


@pytest.mark.parametrize("task", ["pitch", "onset", "chord", "drums", "instrument"])
def test_one_epoch_fit_per_task(task, tiny_data, tmp_path):
    out = tmp_path / "run"
    r = run_cli([sys.executable, "-m", "train", "fit", "--task", task, "--data", str(tiny_data(task)), "--out", str(out),
                 "--width", "0.25", *FAST])
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == task and "test" in m and m["params"] > 0
    assert (out / "best.pt").exists() and (out / f"{task}-dense.ts").exists()
    import torch

    torch.load(out / "best.pt", weights_only=True)


def _load_without_train(bundles):
    code = ("import sys; sys.modules['train'] = None\n"
            "import torch, json\n"
            "from edgemir.bundle import load_bundle\n"
            "from edgemir.frontend import Framing\n"
            "for p in sys.argv[1:]:\n"
            "    b = load_bundle(p)\n"
            "    f = b.module.features(torch.rand(40, Framing.from_card(b.card['frontend']).n_bins))\n"
            "    y, _ = b.module(f.unsqueeze(0), b.module.initial_state())\n"
            "    assert y.shape[-1] == 40 - b.card['receptive_field'] + 1\n"
            "    print(json.dumps([b.card['round'], b.card['params'], b.card['nonzero_params']]))\n")
    r = subprocess.run([sys.executable, "-c", code, *map(str, bundles)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


@pytest.mark.parametrize("mode", ["trim", "mask"])
def test_three_round_lottery_writes_loadable_bundles(mode, tiny_data, tmp_path):
    out = tmp_path / mode
    args = [sys.executable, "-m", "train", "lottery", "--task", "drums", "--data", str(tiny_data("drums")), "--out",
            str(out), "--mode", mode, "--rate", "0.3", "--width", "0.25", *FAST]
    if mode == "trim":
        args += ["--min-keep", "0.1", "--distill", "0.5"]
    else:  # three rounds of 0.3 would remove ~66% of the maskable weights: round 3 lands on 60% instead
        args += ["--target", "0.6"]
    r = run_cli(args + ["--rounds", "2"])
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    r = run_cli(args + ["--rounds", "3"])  # resumes from round 2
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    rounds = json.loads((out / "rounds.json").read_text())["rounds"]
    assert [x["round"] for x in rounds] == [0, 1, 2, 3]
    bundles = sorted((out / "bundles").glob("*.ts"))
    assert len(bundles) == 4
    cards = _load_without_train(bundles)
    params = [c[1] for c in cards]
    nonzero = [c[2] for c in cards]
    st = torch.load(out / "state.pt", weights_only=True)  # the next round must rewind to epoch-1 weights,
    moved = [k for k, v in st["rewind"].items() if v.is_floating_point() and not torch.equal(v, st["net"][k])]
    assert len(moved) > len(st["net"]) // 2  # not to the weights this round trained
    if mode == "trim":
        assert params[0] > params[1] > params[2] > params[3]
        assert rounds[3]["bytes"] < rounds[0]["bytes"]
        settings = json.loads((out / "rounds.json").read_text())["settings"]
        assert settings["min_keep"] == 0.1 and settings["distill"] == 0.5
        from train.lottery import dense_teacher
        from train.nets import count_params

        teacher = dense_teacher(st)  # the distillation teacher is the dense round 0, frozen
        assert count_params(teacher) == params[0] and not any(p.requires_grad for p in teacher.parameters())
        _rescore_on_a_larger_test_split(out, tmp_path)
    else:  # masks keep the dense shape and report their true non-zero count
        assert len(set(params)) == 1
        assert nonzero[0] > nonzero[1] > nonzero[2] > nonzero[3]
        assert 0.25 < nonzero[3] / nonzero[0] < 0.5  # about 0.7^3 of the maskable weights
        assert int(0.4 * nonzero[0]) - 2 <= nonzero[3] <= int(0.4 * nonzero[0])  # landed on --target 0.6
        assert rounds[3]["rate"] < 0.3 == rounds[2]["rate"]
        r = run_cli(args + ["--rounds", "5"])  # the target is reached: no further round
        assert r.returncode == 0 and len(json.loads((out / "rounds.json").read_text())["rounds"]) == 4


def test_mask_mode_with_a_unit_criterion_masks_what_trim_would_remove(tiny_data, tmp_path):
    """``--mode mask --criterion batchnorm``: the trim plan as masks; dense shape, about --rate fewer
    non-zero parameters each round, resumable (the masked units are in the state)."""
    out = tmp_path / "unitmask"
    args = [sys.executable, "-m", "train", "lottery", "--task", "drums", "--data", str(tiny_data("drums")), "--out",
            str(out), "--mode", "mask", "--criterion", "batchnorm", "--rate", "0.3", "--width", "0.25",
            *FAST]
    r = run_cli(args + ["--rounds", "1"])
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    r = run_cli(args + ["--rounds", "2"])  # resumes from round 1
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    rounds = json.loads((out / "rounds.json").read_text())["rounds"]
    assert [x["round"] for x in rounds] == [0, 1, 2]
    assert len({x["params"] for x in rounds}) == 1
    nonzero = [x["nonzero_params"] for x in rounds]
    assert 0.6 < nonzero[1] / nonzero[0] < 0.8 and 0.6 < nonzero[2] / nonzero[1] < 0.8
    st = torch.load(out / "state.pt", weights_only=True)
    assert st["units"] and all(len(v) < st["dense_widths"][k] for k, v in st["units"].items())


def _rescore_on_a_larger_test_split(run, tmp_path):
    """`train rescore`: every round re-scored on a new test split; report/ship see the new scores,
    rounds.json (which a resumed run rewrites) and the old card scores are kept."""
    from edgemir.bundle import load_bundle
    from train.generate import write_dataset
    from train.report import load_run

    before = (run / "rounds.json").read_text()
    old_cards = {p.name: load_bundle(p).card["scores"]["test"] for p in (run / "bundles").glob("*.ts")}
    big = write_dataset("drums", "test", 0.5, 0, tmp_path / "big" / "test", progress=False)
    r = run_cli([sys.executable, "-m", "train", "rescore", str(run), "--data", str(tmp_path / "big"), "--reason", "t"])
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert (run / "rounds.json").read_text() == before
    old_rows = json.loads(before)["rounds"]
    for row, old in zip(load_run(run)["rounds"], old_rows):
        card = load_bundle(run / "bundles" / row["bundle"]).card
        assert row["test_all"]["items"] == len(big["items"]) > old["test_all"]["items"]
        assert row["test"] == card["scores"]["test"]["mean_f"] and row["test_before_rescore"] == old["test"]
        assert card["amendments"][-1]["old"]["scores"]["test"] == old_cards[row["bundle"]]
    r = run_cli([sys.executable, "-m", "train", "rescore", str(tmp_path / "big"), "--data", str(tmp_path / "big"),
                 "--reason", "t"])  # not a lottery run: one line, no traceback
    assert r.returncode != 0 and b"no rounds.json" in r.stderr and b"Traceback" not in r.stderr


@pytest.mark.parametrize("task", ["pitch", "onset", "chord", "drums", "instrument"])
def test_distill_loss_is_minimal_at_the_teachers_outputs(task):
    from train.dataset import IGNORE
    from train.fit import distill_loss

    torch.manual_seed(0)
    shape = {"pitch": (2, 361, 9), "chord": (2, 25, 9), "instrument": (2, 12, 9)}.get(task, (2, 9, 5))
    teacher = torch.randn(shape) * 3
    target = torch.zeros(2, 9, dtype=torch.long)
    target[:, :4] = IGNORE  # silent instrument frames: not scored
    at = teacher.clone().requires_grad_(True)
    distill_loss(task, at, teacher, target).backward()
    assert at.grad.abs().max() < 1e-6  # the teacher's own outputs are the optimum
    other = torch.randn(shape).requires_grad_(True)
    off = distill_loss(task, other, teacher, target)
    off.backward()
    assert off > distill_loss(task, teacher, teacher, target) + 0.1
    if task == "instrument":
        assert other.grad[..., :4].abs().max() == 0 and other.grad[..., 4:].abs().max() > 0


def test_report_writes_table_and_figures(tiny_data, tmp_path):
    out = tmp_path / "trim"
    r = run_cli([sys.executable, "-m", "train", "lottery", "--task", "onset", "--data", str(tiny_data("onset")),
                 "--out", str(out), "--rounds", "1", "--width", "0.25", "--criterion", "information", *FAST])
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    r = run_cli([sys.executable, "-m", "train", "report", str(out), "--out", str(tmp_path / "rep")])
    assert r.returncode == 0, r.stderr.decode()
    table = (tmp_path / "rep" / "report.md").read_text()
    assert "| trim information global rewind" in table
    assert (tmp_path / "rep" / "score_vs_params.png").stat().st_size > 1000
    # the report keeps the run's records: once the run folder is gone, the report can be rewritten from them
    (kept,) = (tmp_path / "rep" / "runs").iterdir()
    assert (kept / "rounds.json").read_text() == (out / "rounds.json").read_text()
    r = run_cli([sys.executable, "-m", "train", "report", str(out), str(kept), "--out", str(tmp_path / "rep3")])
    assert r.returncode == 2 and b"same name" in r.stderr and b"Traceback" not in r.stderr
    shutil.rmtree(out)
    r = run_cli([sys.executable, "-m", "train", "report", str(kept), "--out", str(tmp_path / "rep2")])
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "rep2" / "report.md").read_text() == table


def test_amend_card_relabels_but_keeps_weights_and_measured_figures(tmp_path):
    from edgemir.bundle import find_bundles, load_bundle

    src = find_bundles(None, ["chord"])["chord"]
    path = tmp_path / "chord.ts"
    path.write_bytes(src.read_bytes())
    before = load_bundle(path).card
    cmd = [sys.executable, "-m", "train", "amend-card", str(path), "--reason", "test"]
    r = run_cli(cmd + ["--set", "reset=finetune"])
    assert r.returncode == 0, r.stderr.decode()
    after = load_bundle(path).card  # the sha256 of the weights still checks
    assert after["reset"] == "finetune" and after["amendments"][-1]["old"] == {"reset": before["reset"]}
    assert after["bytes"] == path.stat().st_size and after["weights_sha256"] == before["weights_sha256"]
    r = run_cli(cmd + ["--set", "params=1"])
    assert r.returncode != 0 and b"measured" in r.stderr and b"Traceback" not in r.stderr
    assert load_bundle(path).card["params"] == before["params"]


def test_lottery_starts_from_a_fit_run(tiny_data, tmp_path):
    """... and keeps the framing the parent was fitted on (here the centred one, not onset's own)."""
    data = str(tiny_data("onset"))
    fit = [sys.executable, "-m", "train", "fit", "--task", "onset", "--data", data, "--out", str(tmp_path / "fit"),
           "--width", "0.25", "--epochs", "2", "--steps", "2", "--batch", "4"]  # longer than a round below
    r = run_cli(fit + ["--framing", "500:10"])
    assert r.returncode != 0 and b"--framing" in r.stderr and b"Traceback" not in r.stderr
    assert run_cli(fit + ["--framing", "1024:512"]).returncode == 0
    lot = [sys.executable, "-m", "train", "lottery", "--task", "onset", "--data", data, "--rounds", "1",
           "--init-from", str(tmp_path / "fit"), "--criterion", "batchnorm", *FAST]
    r = run_cli(lot + ["--out", str(tmp_path / "bad"), "--width", "0.5"])
    assert r.returncode != 0 and b"width" in r.stderr and b"Traceback" not in r.stderr
    r = run_cli(lot + ["--out", str(tmp_path / "lt"), "--width", "0.25"])
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    run = json.loads((tmp_path / "lt" / "rounds.json").read_text())
    fitted = json.loads((tmp_path / "fit" / "metrics.json").read_text())
    rounds = run["rounds"]
    assert rounds[0]["test"] == fitted["test"]["f"] and rounds[1]["params"] < rounds[0]["params"]
    assert run["settings"]["init_from"] == str(tmp_path / "fit")
    assert rounds[0]["dense_fit"]["epochs"] == fitted["settings"]["epochs"] != run["settings"]["epochs"]
    from edgemir.bundle import read_card

    made = json.loads((tiny_data("onset") / "train" / "manifest.json").read_text())
    for rd in rounds:
        card = read_card(tmp_path / "lt" / "bundles" / rd["bundle"])
        assert card["frontend"]["n_fft"] == 1024
        # the card says what the bundle was trained on, as `train data` wrote it
        assert card["training_data"]["train"]["generator_version"] == made["generator_version"]
        assert card["training_data"]["train"]["soundfonts"] == made["soundfonts"]
    r = run_cli([sys.executable, "-m", "edgemir", "info", str(tmp_path / "lt" / "bundles" / rounds[1]["bundle"])])
    assert f"trained on  generator {made['generator_version']}, {made['minutes']} min" in r.stdout.decode()


def test_lottery_continues_a_trimmed_bundles_lineage(tiny_data, tmp_path):
    """``--init-from BUNDLE.ts``: round 0 is the bundle itself (its weights, as the teacher too), and fractions
    removed, the width floor and --target stay relative to the dense parent the bundle was trimmed from."""
    from edgemir.bundle import load_bundle

    data = str(tiny_data("drums"))
    first = [sys.executable, "-m", "train", "lottery", "--task", "drums", "--data", data, "--width", "0.25",
             "--rate", "0.3", "--distill", "0.5", "--min-keep", "0.1", *FAST]
    assert run_cli(first + ["--out", str(tmp_path / "a"), "--rounds", "1"]).returncode == 0
    parent = tmp_path / "a" / "bundles" / "drums-trim-r01.ts"
    card = load_bundle(parent).card
    more = first + ["--reset", "finetune", "--init-from", str(parent), "--target", "0.6", "--rounds", "3"]
    r = run_cli(more + ["--out", str(tmp_path / "b")])
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    rounds = json.loads((tmp_path / "b" / "rounds.json").read_text())["rounds"]
    assert rounds[0]["params"] == card["params"] and rounds[0]["fraction_removed"] == card["fraction_removed"]
    assert rounds[0]["dense_fit"]["bundle"] == str(parent)
    assert rounds[-1]["fraction_removed"] >= 0.6 - 1e-3 and rounds[-1]["params"] < card["params"]
    later = load_bundle(tmp_path / "b" / "bundles" / rounds[-1]["bundle"]).card
    assert later["dense_params"] == card["dense_params"]
    for bad, why in ((["--width", "0.5"], b"dense parent"), (["--reset", "rewind"], b"finetune")):
        r = run_cli(more + ["--out", str(tmp_path / "bad")] + bad)
        assert r.returncode != 0 and why in r.stderr and b"Traceback" not in r.stderr, r.stderr.decode()[-800:]
    r = run_cli([*more[:-6], "--task", "onset", "--init-from", str(parent), "--rounds", "1", "--out",
                 str(tmp_path / "bad2")])
    assert r.returncode != 0 and b"a drums bundle" in r.stderr and b"Traceback" not in r.stderr


def test_an_interrupted_fit_resumes_to_the_same_weights(tiny_data, tmp_path, monkeypatch):
    """A fit killed after epoch 2 and run again ends with the weights of an uninterrupted fit."""
    import train.fit as fit
    from train.__main__ import main

    argv = ["fit", "--task", "onset", "--data", str(tiny_data("onset")), "--width", "0.25", "--epochs", "3",
            "--steps", "2", "--batch", "4", "--threads", "1"]
    assert main(argv + ["--out", str(tmp_path / "whole")]) in (0, None)
    calls, real = [], fit.tune_and_score

    def dies_in_epoch_3(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(fit, "tune_and_score", dies_in_epoch_3)
    assert main(argv + ["--out", str(tmp_path / "cut")]) not in (0, None)  # Ctrl-C: a message and an exit code
    assert not (tmp_path / "cut" / "best.pt").exists()
    # other settings may not continue it
    r = run_cli([sys.executable, "-m", "train", *argv[:-4], "--epochs", "4", "--threads", "1",
                 "--out", str(tmp_path / "cut")])
    assert r.returncode != 0 and b"epochs" in r.stderr and b"Traceback" not in r.stderr
    calls.clear()
    monkeypatch.setattr(fit, "tune_and_score", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    assert main(argv + ["--out", str(tmp_path / "cut")]) in (0, None)
    assert len(calls) == 1 + 2  # epoch 3 only, then the final valid and test scoring
    whole = torch.load(tmp_path / "whole" / "best.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "best.pt", weights_only=True)
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    hist = [json.loads((tmp_path / d / "metrics.json").read_text())["history"] for d in ("whole", "cut")]
    assert [h["valid"] for h in hist[0]] == [h["valid"] for h in hist[1]] and len(hist[1]) == 3


def test_retune_picks_the_pitch_threshold_by_overall_accuracy(tiny_data, tmp_path):
    """RPA ignores the voicing decision, so it cannot choose a voicing threshold; retune uses overall accuracy."""
    from edgemir.bundle import find_bundles, load_bundle
    from train.dataset import load_split
    from train.fit import decoder_grid, model_probs, score

    data = tiny_data("pitch")
    path = tmp_path / "pitch.ts"
    path.write_bytes(find_bundles(None, ["pitch"])["pitch"].read_bytes())
    before = load_bundle(path).card
    r = run_cli([sys.executable, "-m", "train", "retune", str(path), "--data", str(data), "--reason", "test"])
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    after = load_bundle(path).card
    assert after["weights_sha256"] == before["weights_sha256"] and after["bytes"] == path.stat().st_size
    assert after["amendments"][-1]["old"]["decoder"] == before["decoder"]
    b = load_bundle(path)
    recs = model_probs("pitch", b.module, b.card, load_split("pitch", data / "valid"))
    oa = {tuple(sorted(kw.items())): score("pitch", recs, kw)["overall_accuracy"] for kw in decoder_grid("pitch")}
    assert oa[tuple(sorted(after["decoder"].items()))] == max(oa.values())  # (threshold, and steady if taken)
    assert after["scores"]["valid"]["overall_accuracy"] == max(oa.values())
    assert len(set(oa.values())) > 1  # the threshold matters on this data, so the choice is a real one


def test_retune_align_stamps_a_late_stamped_bundle_earlier(tiny_data, tmp_path):
    """`retune --align`: a bundle whose outputs are stamped two frames late (its card's look-ahead lowered by
    two) loses pitch accuracy on moving notes; aligning on valid moves the stamp back (a larger look-ahead)
    and records the old one. The choice is the least delay within the tolerance of the best on valid (the
    pitch decoder adds none, so the least look-ahead)."""
    from edgemir.bundle import find_bundles, load_bundle
    from train.dataset import load_split
    from train.export import rewrite_card
    from train.fit import LATENCY_TOLERANCE, model_probs, tune_on

    data = tiny_data("pitch")
    path = tmp_path / "pitch.ts"
    path.write_bytes(find_bundles(None, ["pitch"])["pitch"].read_bytes())
    b = load_bundle(path)
    late = int(b.card["lookahead"]) - 2
    rewrite_card(path, b.module, {**b.card, "lookahead": late})
    r = run_cli([sys.executable, "-m", "train", "retune", str(path), "--data", str(data), "--reason", "test", "--align"])
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    after = load_bundle(path).card
    assert after["weights_sha256"] == b.card["weights_sha256"]
    amend = after["amendments"][-1]
    assert amend["old"]["lookahead"] == late and amend["new"]["lookahead"] == after["lookahead"]
    assert after["lookahead"] > late  # two frames late costs accuracy that the alignment wins back
    valid = load_split("pitch", data / "valid")
    oa = {la: tune_on("pitch", model_probs("pitch", b.module, {**b.card, "lookahead": la}, valid))[1]["overall_accuracy"]
          for la in (late, after["lookahead"])}
    assert oa[after["lookahead"]] > oa[late]
    best = max(amend["new"]["valid_by_lookahead"].values())
    assert after["lookahead"] == min(int(a) for a, v in amend["new"]["valid_by_lookahead"].items()
                                     if v >= best - LATENCY_TOLERANCE)
    # events are scored within 50 ms: aligning them would only stamp them later, so it is refused
    onset = tmp_path / "onset.ts"
    onset.write_bytes(find_bundles(None, ["onset"])["onset"].read_bytes())
    r = run_cli([sys.executable, "-m", "train", "retune", str(onset), "--data", str(data), "--reason", "t", "--align"])
    assert r.returncode == 2 and "frame-wise" in r.stderr.decode() and b"Traceback" not in r.stderr
