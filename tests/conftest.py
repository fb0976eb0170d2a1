"""Shared fixtures: tiny rendered datasets (real SoundFont audio), made once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_addoption(parser):
    parser.addoption("--fuzz-examples", default="200", help="hypothesis cases per kind in tests/test_fuzz.py")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Render 0.2 minutes per split and task; returns a function task -> folder with train/valid/test."""
    from train.generate import write_dataset

    base = tmp_path_factory.mktemp("data")
    made: dict[str, Path] = {}

    def get(task: str, minutes: float = 0.2) -> Path:
        if task not in made:
            for split in ("train", "valid", "test"):
                write_dataset(task, split, minutes, 0, base / task / split, progress=False)
            made[task] = base / task
        return made[task]

    return get


def run_cli(args: list[str], cwd: Path = ROOT, env: dict | None = None, timeout: float = 600, input: bytes | None = None):
    import subprocess

    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT)
    if env:
        e.update(env)
    return subprocess.run(args, cwd=cwd, env=e, capture_output=True, timeout=timeout, input=input)


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory):
    """A folder with one small, randomly initialised bundle per task (real TorchScript exports)."""
    import torch

    from train.export import export
    from train.nets import build

    d = tmp_path_factory.mktemp("bundles")
    torch.manual_seed(0)
    for task in ("pitch", "onset", "chord", "drums", "instrument"):
        net = build(task, width=0.1).eval()
        # random nets hover near 0.5: threshold 0 makes every local maximum an event (plenty to compare)
        dec = {"onset": {"threshold": 0.0}, "drums": {"thresholds": [0.0, 0.0, 0.0]}}.get(task, {})
        export(task, net, d / f"{task}-tiny.ts", {"round": 0, "fraction_removed": 0.0}, decoder=dec)
    return d
