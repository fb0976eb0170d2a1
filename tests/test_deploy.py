"""Deployment: scripts pass shellcheck, the dry run prints a plan, a real install into a throw-away
prefix works and is idempotent, the unit verifies, uninstall keeps the config."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT

SCRIPTS = sorted((ROOT / "deploy").glob("*.sh"))


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_scripts_pass_shellcheck():
    r = subprocess.run(["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="the system-wide dry run checks root")
def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path):
    wheel = tmp_path / "edgemir-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    r = subprocess.run(["bash", str(ROOT / "deploy" / "install-pi.sh"), "--wheel", str(wheel), "--dry-run"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for part in ("install plan", "system user edgemir", "/opt/edgemir/venv", "torch==", "edgemir.service",
                 "would run:"):
        assert part in r.stdout, (part, r.stdout)
    assert not Path("/opt/edgemir").exists() or Path("/opt/edgemir/venv").exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_install_into_prefix_is_idempotent_and_verifies(tmp_path, tiny_bundles):
    dist = ROOT / "dist"
    r = subprocess.run(["bash", str(ROOT / "deploy" / "build.sh"), "--models", str(tiny_bundles)], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    wheel = next(dist.glob("edgemir-*.whl"))
    bundles = next(dist.glob("edgemir-bundles-*.tar.gz"))
    prefix = tmp_path / "root"
    cmd = ["bash", str(ROOT / "deploy" / "install-pi.sh"), "--prefix", str(prefix), "--wheel", str(wheel),
           "--bundles", str(bundles)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    exe = prefix / "opt/edgemir/venv/bin/edgemir"
    unit = prefix / "etc/systemd/system/edgemir.service"
    config = prefix / "etc/edgemir/edgemir.toml"
    assert exe.exists() and unit.exists() and config.exists()
    installed = sorted((prefix / "opt/edgemir/models").glob("*.ts"))
    assert len(installed) == 5
    # the installed runtime has no training code and reads the bundles
    r = subprocess.run([str(exe), "info", str(installed[0]), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(prefix / "opt/edgemir/venv/bin/python"), "-c", "import train"], capture_output=True,
                       cwd=tmp_path)
    assert r.returncode != 0
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    # the runtime-only venv (no train/dev extras) resamples files at the usual device rates
    # (soxr was missing from the runtime dependencies: ModuleNotFoundError on 44.1 kHz)
    wavs = []
    for rate in (44100, 48000):
        n = int(3 * rate)
        x = (0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / rate)).astype(np.float32)
        x[:: rate // 2] = 0.9  # clicks
        wavs.append(tmp_path / f"tone{rate}.wav")
        sf.write(wavs[-1], x, rate, subtype="PCM_16")
    out = tmp_path / "analysis"
    r = subprocess.run([str(exe), "analyze", *map(str, wavs), "--models", str(prefix / "opt/edgemir/models"),
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for w in wavs:
        assert list(out.glob(w.stem + ".*")), (w, sorted(out.iterdir()))
    # idempotent: a second run succeeds and keeps a user's config
    config.write_text(config.read_text() + "\n# my edit\n")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "# my edit" in config.read_text()
    r = subprocess.run(["bash", str(ROOT / "deploy" / "install-pi.sh"), "--prefix", str(prefix), "--uninstall"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not (prefix / "opt/edgemir").exists() and not unit.exists() and config.exists()
