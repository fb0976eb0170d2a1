"""Metrics: references score perfectly; perturbed predictions lose by the expected amount."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
from conftest import run_cli

from edgemir.errors import UserError
from edgemir.labels import DRUM_CLASSES
from edgemir.tasks import REGISTRY
from train import metrics


def _copy_refs(task, src, dst):
    dst.mkdir()
    for p in src.glob("*" + REGISTRY[task].suffix):
        shutil.copy(p, dst / p.name)


def test_references_as_predictions_score_perfectly(tiny_data, tmp_path):
    expected = {"pitch": ("rpa", 1.0), "onset": ("f", 1.0), "chord": ("majmin", 1.0), "drums": ("mean_f", 1.0),
                "instrument": ("accuracy", 1.0)}
    for task, (key, val) in expected.items():
        ref = tiny_data(task) / "test"
        est = tmp_path / task
        _copy_refs(task, ref, est)
        r = run_cli([sys.executable, "-m", "train", "evaluate", "--task", task, "--ref", str(ref), "--est", str(est)])
        assert r.returncode == 0, r.stderr.decode()
        res = metrics.evaluate_folders(task, ref, est)["summary"]
        assert res[key] == val, (task, res)


def test_shifted_onsets_score_lower():
    ref = np.arange(1, 21) * 0.5
    assert metrics.onset_scores(ref, ref)["f"] == 1.0
    assert metrics.onset_scores(ref, ref + 0.03)["f"] == 1.0  # inside the 50 ms window
    assert metrics.onset_scores(ref, ref + 0.08)["f"] == 0.0  # outside it
    half = ref.copy()
    half[::2] += 0.2
    assert abs(metrics.onset_scores(ref, half)["f"] - 0.5) < 1e-9


def test_octave_errors_keep_chroma_but_lose_pitch():
    t = np.arange(100) * 0.01
    f = np.full(100, 220.0)
    est = f.copy()
    est[:25] *= 2  # a quarter of the frames an octave up
    s = metrics.pitch_scores((t, f), (t, est))
    assert abs(s["rpa"] - 0.75) < 1e-9 and s["rca"] == 1.0
    unv = -f  # right pitch, voicing wrongly off: pitch still counts, voicing recall 0
    s = metrics.pitch_scores((t, f), (t, unv))
    assert s["rpa"] == 1.0 and s["voicing_recall"] == 0.0


def test_wrong_chords_lose_their_duration():
    iv = np.array([[0.0, 2.0], [2.0, 4.0]])
    assert metrics.chord_scores((iv, ["C:maj", "A:min"]), (iv, ["C:maj", "A:min"]))["majmin"] == 1.0
    s = metrics.chord_scores((iv, ["C:maj", "A:min"]), (iv, ["C:maj", "A:maj"]))["majmin"]
    assert abs(s - 0.5) < 1e-9
    s = metrics.chord_scores((iv, ["C:maj", "A:min"]), (np.array([[0.0, 4.0]]), ["C:maj"]))["majmin"]
    assert abs(s - 0.5) < 1e-9


def test_drums_per_class_and_instrument_accuracy():
    ref = {"kick": np.array([0.5, 1.0]), "snare": np.array([0.75]), "hihat": np.array([0.5, 0.625, 0.75, 0.875])}
    est = {"kick": ref["kick"], "snare": np.array([]), "hihat": ref["hihat"]}
    s = metrics.event_scores(ref, est, DRUM_CLASSES)
    assert s["kick"] == 1.0 and s["snare"] == 0.0 and abs(s["mean_f"] - 2 / 3) < 1e-9
    per = {"a": {"ref": "brass", "est": "brass"}, "b": {"ref": "reed", "est": "brass"}}
    agg = metrics.aggregate("instrument", per)
    assert agg["accuracy"] == 0.5 and 0 < agg["macro_f1"] < 1


def test_drums_are_tuned_on_pooled_f_where_one_false_hit_counts_once():
    """A split with a drum-free item: one false kick there costs that item's whole kick F in the item mean (1 -> 0),
    so thresholds tuned on it go to the top; pooled over the split it is one false hit among many."""
    kit = {"kick": np.arange(0.5, 10, 0.5), "snare": np.arange(0.75, 10, 1.0), "hihat": np.arange(0.5, 10, 0.25)}
    quiet, one_false = {c: np.array([]) for c in DRUM_CLASSES}, {**{c: np.array([]) for c in DRUM_CLASSES},
                                                                 "kick": np.array([2.0])}
    missed = {**kit, "kick": kit["kick"][::2]}  # a high threshold: half the kicks, and silence on the voice
    low = metrics.aggregate("drums", {"kit": metrics.event_scores(kit, kit, DRUM_CLASSES),
                                      "voice": metrics.event_scores(quiet, one_false, DRUM_CLASSES)})
    high = metrics.aggregate("drums", {"kit": metrics.event_scores(kit, missed, DRUM_CLASSES),
                                       "voice": metrics.event_scores(quiet, quiet, DRUM_CLASSES)})
    assert low["kick"] == 0.5 and high["kick"] > 0.8  # the item mean prefers missing half the kicks
    assert low["kick_pooled_f"] == 2 * 19 / (19 + 20) > high["kick_pooled_f"] == 2 * 10 / (19 + 10)
    assert low["pooled_mean_f"] > high["pooled_mean_f"] and REGISTRY["drums"].tune == "pooled_mean_f"


def test_an_unknown_instrument_estimate_is_a_wrong_answer_not_an_error(tmp_path):
    ref, est = tmp_path / "ref", tmp_path / "est"
    ref.mkdir()
    est.mkdir()
    for name, fam, guess in (("a", "flute", "unknown"), ("b", "reed", "reed")):
        (ref / f"{name}.wav").write_bytes(b"")
        (ref / f"{name}.label").write_text(fam + "\n")
        (est / f"{name}.label").write_text(guess + "\n")
    s = metrics.evaluate_folders("instrument", ref, est)["summary"]
    assert s["accuracy"] == 0.5
    (est / "b.label").write_text("kazoo\n")  # anything else outside the vocabulary is still refused
    with pytest.raises(UserError):
        metrics.evaluate_folders("instrument", ref, est)


def test_peers_are_scored_and_timed_like_ours(tiny_data, tiny_bundles):
    """aubio and librosa run on rendered clips, tuned on valid, scored on test by the same mir_eval code."""
    import importlib.util

    from train.peers import OPTIONAL, PEERS, peers_markdown, run_ours, run_peer

    rows = []
    for task in ("pitch", "onset"):
        d = tiny_data(task)
        folders = {"valid": d / "valid", "test": d / "test"}
        for name in (n for n, p in PEERS.items() if p[0] == task and "pyin" not in n  # pyin: 1 s per s
                     and (n not in OPTIONAL or importlib.util.find_spec(OPTIONAL[n]))):  # extras when installed
            r = run_peer(name, folders)
            assert r["value"] in PEERS[name][3] and r["ms_per_second_audio"]["test"] > 0
            rows.append(r)
        rows.append(run_ours(task, tiny_bundles / f"{task}-tiny.ts", folders))
    by = {r["peer"]: r for r in rows}
    # rendered notes are easy for classic DSP: a unit or octave slip would sink these
    assert by["aubio pitch (yinfft)"]["test"]["rpa"] > 0.7
    md = peers_markdown(rows, ["test"])
    assert "| pitch | aubio pitch (yinfft) | silence dB" in md and "test rpa | test overall_accuracy" in md
    assert md.count("| onset |") == 3


def test_aubio_pitch_is_stamped_at_its_window_centre():
    """Notes changing every 0.2 s: the stamped times score better than the same shifted by half a window."""
    from train.metrics import pitch_scores
    from train.peers import aubio_yinfft

    sr, length = 16000, 0.2
    notes = 440 * 2 ** (np.array([0, 7, 3, 10, 5, -2, 8, 1, -5, 4]) / 12)
    x = np.concatenate([0.3 * np.sin(2 * np.pi * f * np.arange(int(length * sr)) / sr) for f in notes])
    tr = np.arange(int(len(notes) * length / 0.01)) * 0.01
    ref = (tr, notes[np.minimum((tr / length).astype(int), len(notes) - 1)])
    t, f0 = aubio_yinfft(x.astype(np.float32), -50)
    rpa = {d: pitch_scores(ref, (t + d, f0))["rpa"] for d in (-0.032, 0.0, 0.032)}
    assert rpa[0.0] > 0.8 and rpa[0.0] > rpa[-0.032] + 0.02 and rpa[0.0] > rpa[0.032] + 0.02, rpa


def test_peer_onsets_are_stamped_on_time():
    """Decaying tones at known times: both onset peers find them all, on average within 15 ms."""
    import mir_eval

    from train.peers import aubio_onsets, librosa_flux, librosa_onsets

    sr, rng = 16000, np.random.default_rng(0)
    times = np.cumsum(rng.uniform(0.2, 0.5, 20)) + 0.3
    x = np.zeros(int((times[-1] + 0.6) * sr))
    k = np.arange(int(0.3 * sr))
    for t in times:
        i = int(t * sr)
        x[i:i + len(k)] += 0.5 * np.sin(2 * np.pi * rng.uniform(150, 800) * k / sr) * np.exp(-k / (0.08 * sr))
    x = x.astype(np.float32)
    for est in (aubio_onsets(x, 0.3)[0], librosa_onsets(librosa_flux(x), 0.07)[0]):
        hits = mir_eval.util.match_events(times, est, 0.05)
        assert len(hits) == len(times)
        assert abs(np.mean([est[j] - times[i] for i, j in hits])) < 0.015


def test_realeval_scores_per_category_with_a_confusion_matrix(tiny_data, tiny_bundles, tmp_path):
    """``train realeval`` on a folder laid out like ``../shared/dev-real`` (rendered clips standing in for
    recordings): per-task rows, categories from the sources list's notes, and for instrument a
    confusion matrix whose cells add up to the clips."""
    import csv
    import shutil

    from train.realeval import markdown, realeval

    dev = tmp_path / "dev-real"
    rows = []
    for task in ("pitch", "instrument", "drums"):
        (dev / task).mkdir(parents=True)
        for i, f in enumerate(sorted((tiny_data(task) / "test").iterdir())):
            if f.suffix in (".wav", ".csv", ".label", ".drums") and not f.name.startswith("manifest"):
                shutil.copy(f, dev / task / f.name)
                if f.suffix == ".wav":
                    note = {"pitch": ["female singer", "male singer"][i % 2], "drums": "full band mix"}.get(task, "")
                    rows.append({"file": f"{task}/{f.name}", "source": "rendered", "license": "-", "seconds": "1",
                                 "note": note})
    with open(dev / "SOURCES-test.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "source", "license", "seconds", "note"])
        w.writeheader()
        w.writerows(rows)
    rep = realeval([tiny_bundles], dev)
    assert set(rep["tasks"]) == {"pitch", "instrument", "drums"}
    pitch = rep["tasks"]["pitch"][0]
    assert set(pitch["categories"]) <= {"female voice", "male voice"} and pitch["categories"]
    assert sum(c["items"] for c in pitch["categories"].values()) == pitch["summary"]["items"]
    assert set(rep["tasks"]["drums"][0]["categories"]) == {"full mix"}
    inst = rep["tasks"]["instrument"][0]
    cells = sum(sum(r.values()) for r in inst["confusion"]["rows"].values())
    assert cells == inst["summary"]["items"] and set(inst["categories"]) <= set(inst["confusion"]["labels"])
    md = markdown(rep)
    assert "## pitch" in md and "female voice" in md and "Confusion" in md
