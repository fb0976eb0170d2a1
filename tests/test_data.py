"""The data generator: vocabulary, determinism, annotation formats, bad input."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import soundfile as sf
from conftest import run_cli

from edgemir.labels import CHORDS, FAMILIES, SAMPLE_RATE
from edgemir.tasks import REGISTRY
from train import annotations as ann


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_chord_data_cli_is_deterministic_and_in_vocabulary(tmp_path):
    outs = []
    for k in range(2):
        out = tmp_path / f"x{k}"
        r = run_cli([sys.executable, "-m", "train", "data", "--task", "chord", "--split", "train", "--minutes", "1",
                     "--seed", "0", "--out", str(out)])
        assert r.returncode == 0, r.stderr.decode()
        outs.append(out)
    assert _digest(outs[0]) == _digest(outs[1])
    labs = list(outs[0].glob("*.lab"))
    assert labs
    for p in labs:
        _, labels = ann.read_lab(p, CHORDS)  # raises on a label outside the vocabulary
        assert all(lab in CHORDS for lab in labels)
    m = json.loads((outs[0] / "manifest.json").read_text())
    pool = ["FluidR3_GM.sf2", "MuseScore_General.sf3", "sf_GMbank.sf2"]  # installed by `make test`
    assert m["soundfonts"] == pool and m["minutes"] >= 1.0 and m["seed"] == 0
    used = [f for it in m["items"] for f in it["soundfonts"]]
    assert set(used) == set(pool), "train items must draw their General MIDI bank from the whole pool"


def test_every_task_writes_audio_and_annotations(tiny_data):
    for task in ("pitch", "onset", "chord", "drums", "instrument"):
        d = tiny_data(task)
        m = json.loads((d / "test" / "manifest.json").read_text())
        assert m["soundfonts"][0] == "TimGM6mb.sf2"  # cross-soundfont test split
        names = ann.list_items(task, d / "train")
        x, sr = sf.read(d / "train" / f"{names[0]}.wav")
        assert sr == SAMPLE_RATE and x.ndim == 1 and np.abs(x).max() > 0.01
        ref = ann.read_annotation(task, d / "train" / (names[0] + REGISTRY[task].suffix))
        if task == "pitch":
            t, f0 = ref
            assert np.allclose(np.diff(t), 0.01, atol=1e-6)
            voiced = f0[f0 > 0]
            assert len(voiced) and voiced.min() > 45 and voiced.max() < 2000
        elif task == "instrument":
            assert ref in FAMILIES


def test_pitch_labels_cover_the_range():
    from train.generate import gen_pitch

    rng = np.random.default_rng(3)
    lo, hi = 1e9, 0.0
    for _ in range(300):
        _, _, a = gen_pitch(rng)
        v = a["f0"][a["f0"] > 0]
        if len(v):
            lo, hi = min(lo, v.min()), max(hi, v.max())
    assert lo < 60 and hi > 1500, (lo, hi)


def test_bad_inputs_give_one_line_errors(tmp_path):
    r = run_cli([sys.executable, "-m", "train", "data", "--task", "chords", "--split", "train", "--minutes", "1",
                 "--out", str(tmp_path / "a")])
    assert r.returncode == 2 and b"unknown task" in r.stderr and b"Traceback" not in r.stderr
    r = run_cli([sys.executable, "-m", "train", "data", "--task", "chord", "--split", "train", "--minutes", "1",
                 "--out", str(tmp_path / "b"), "--soundfont", str(tmp_path / "missing.sf2")])
    assert r.returncode == 2 and b"soundfont not found" in r.stderr and b"Traceback" not in r.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.lab").write_text("0.0 1.0 C:maj\n1.0 oops G:maj\n")
    (bad / "x.wav").write_bytes(b"")
    r = run_cli([sys.executable, "-m", "train", "evaluate", "--task", "chord", "--ref", str(bad), "--est", str(bad)])
    assert r.returncode == 2 and b"x.lab:2" in r.stderr and b"Traceback" not in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli([sys.executable, "-m", "train", "evaluate", "--task", "onset", "--ref", str(empty), "--est", str(empty)])
    assert r.returncode == 2 and b"no '*.onsets'" in r.stderr


def test_every_family_has_programs_and_a_range():
    """The generator plays every NSynth family from its General MIDI programs (labels.family_of_program)."""
    from edgemir.labels import CHORDS, FAMILIES
    from train.generate import FAMILY_PROGRAMS

    assert set(FAMILY_PROGRAMS) == set(FAMILIES)
    assert all(progs and lo < hi for progs, lo, hi in FAMILY_PROGRAMS.values())
    assert CHORDS[0] == "N" and len(CHORDS) == 25


def test_hydrogen_kits_play_each_hit_at_its_time():
    """Every usable recorded kit plays a kick, a snare and a closed hat where the score says (energy rises
    within 3 ms of each hit), louder at a higher velocity."""
    import pytest

    from train.kits import hydrogen_kits

    kits = hydrogen_kits()
    if not kits:
        pytest.skip("hydrogen-drumkits is not installed (make test installs it)")
    rng = np.random.default_rng(0)
    for kit in kits:
        for note in (36, 38, 42):
            x = kit.render([(0.5, note, 100)], 1.0, rng)
            assert np.abs(x[:8000]).max() == 0 and np.abs(x[8000:8048]).max() > 0.01, (kit.name, note)
        loud, soft = (np.abs(kit.render([(0.1, 36, v)], 0.5, rng)).max() for v in (100, 40))
        assert loud > soft, kit.name
