"""The task registry: every task is one spec, and a new task of a known format needs only its entry."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from edgemir.decoders import OnsetDecoder
from edgemir.labels import TASKS
from edgemir.tasks import FORMATS, REGISTRY, make_decoder


def test_every_task_has_a_complete_spec():
    assert tuple(REGISTRY) == TASKS
    suffixes = [t.suffix for t in REGISTRY.values()]
    assert len(set(suffixes)) == len(suffixes)
    keys = [k for t in REGISTRY.values() for k in t.config]
    assert len(set(keys)) == len(keys)
    for name, t in REGISTRY.items():
        assert t.format in FORMATS and t.activation in ("sigmoid", "softmax") and t.osc.startswith("/edgemir/")
        # a softmax picks one class per frame (cross-entropy); sigmoid units are trained independently
        assert (t.loss == "ce") == (t.activation == "softmax")
        assert bool(t.classes) == (t.format != "f0")
        for kw in t.grid:  # every tuning setting makes a decoder whose events carry the task's name
            assert make_decoder(name, **kw).task == name
        for arg, _, _, _ in t.config.values():  # edgemir.toml's keys name arguments its decoder takes
            assert arg in inspect.signature(t.decoder).parameters


@pytest.fixture
def beats(monkeypatch):
    """A sixth task, registered the way a new task would be: one entry, nothing else touched."""
    spec = dataclasses.replace(REGISTRY["onset"], name="beats", suffix=".beats", classes=("beat",), osc="/edgemir/beat",
                               decoder=OnsetDecoder, config={})
    monkeypatch.setitem(REGISTRY, "beats", spec)
    return spec


def test_a_new_task_of_a_known_format_flows_through_outputs_training_and_scoring(beats, tmp_path):
    from edgemir.decoders import Event
    from edgemir.display import Dashboard
    from edgemir.sinks import AnalysisWriter, OscSink
    from train import annotations as ann
    from train import metrics
    from train.dataset import frame_targets

    # the decoder's events, the result file, the OSC message and the display panel
    dec = make_decoder("beats", threshold=0.5, window=0)
    act = np.zeros((1, 60))
    act[0, [10, 40]] = 0.9
    events = dec.push(act, 0, np.zeros(60)) + dec.finish()
    assert [e.task for e in events] == ["beats", "beats"] and [round(e.t, 2) for e in events] == [0.1, 0.4]
    w = AnalysisWriter(tmp_path, "song", ["beats"], duration=1.0)
    for e in events:
        w.emit(e)
    written = w.close({})
    assert tmp_path / "song.beats" in written
    assert OscSink.__new__(OscSink)._message(Event(0.1, "beats", 0.9, 0.9)) == ("/edgemir/beat", [0.9])
    dash = Dashboard("t", ["beats"])
    dash.update(events)
    assert dash._panel("beats").title == "beats"

    # training targets and scores read the task's own annotation files
    ref = ann.read_annotation("beats", tmp_path / "song.beats")
    assert np.allclose(ref, [0.1, 0.4])
    y = frame_targets("beats", tmp_path / "song.beats", 100)
    assert y.shape == (100, 1) and y[10, 0] == 1.0 and y[11, 0] == 0.5 and y[40, 0] == 1.0 and y.sum() == 4.0
    assert metrics.score_item("beats", ref, np.array([0.11, 0.7]))["f"] == pytest.approx(0.5)


def _imports(path) -> set[str]:
    """The edgemir modules a file imports, at any depth of the file."""
    import ast

    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] == "edgemir":
            parts = n.module.split(".")
            out |= {parts[1]} if len(parts) > 1 else {a.name for a in n.names}
        elif isinstance(n, ast.Import):
            out |= {a.name.split(".")[1] for a in n.names if a.name.startswith("edgemir.")}
    return out


def test_no_import_cycles_and_train_imports_only_the_contract():
    from conftest import ROOT

    graph = {p.stem: _imports(p) for p in (ROOT / "edgemir").glob("*.py")}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for m in graph.get(todo.pop(), ()):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen

    assert [m for m in graph if m in reach(m)] == []
    contract = {"tasks", "labels", "frontend", "bundle", "engine", "decoders", "app", "errors", "formats", "audio_io"}
    used = set().union(*(_imports(p) for p in (ROOT / "train").glob("*.py")))
    assert used <= contract, used - contract
    import ast

    for p in (ROOT / "edgemir").glob("*.py"):  # the device never imports the training code
        for n in ast.walk(ast.parse(p.read_text())):
            names = [n.module or ""] if isinstance(n, ast.ImportFrom) else [a.name for a in getattr(n, "names", [])]
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                assert not any(x.split(".")[0] == "train" for x in names), p
