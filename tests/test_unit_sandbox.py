"""The systemd unit's sandbox, run for real: its seccomp filter around a real ``edgemir run``, and
``systemd-analyze verify`` / ``security`` on the unit file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

UNIT = ROOT / "systemd" / "edgemir.service"
LAUNCHER = ROOT / "tests" / "unit_seccomp.py"
SYSTEM_PY = "/usr/bin/python3"


def _have_seccomp() -> bool:
    if shutil.which("systemd-analyze") is None or not Path(SYSTEM_PY).exists():
        return False
    return subprocess.run([SYSTEM_PY, "-c", "import seccomp"], capture_output=True).returncode == 0


needs_seccomp = pytest.mark.skipif(not _have_seccomp(), reason="needs systemd-analyze and python3-seccomp (apt)")


def _under_filter(unit: Path, *cmd: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([SYSTEM_PY, str(LAUNCHER), str(unit), "--", *cmd], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))


@needs_seccomp
def test_edgemir_runs_under_the_units_syscall_filter(tmp_path):
    """All five shipped bundles, the demo clip, the service's flags, inside the unit's filter.

    On the unit before this test (deny list without ``SystemCallErrorNumber=``) the kernel killed
    the process at ``import numpy`` (OpenBLAS calls ``mbind``, in ``@resources``; torch also calls
    ``sched_setaffinity``): exit -31 (SIGSYS, "Bad system call"), no events."""
    out = tmp_path / "events.jsonl"
    r = _under_filter(UNIT, sys.executable, "-m", "edgemir", "run", "--file", str(ROOT / "edgemir/data/demo.wav"),
                      "--no-display", "--duration", "4", "--jsonl", str(out))
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    tasks = {line.split('"task": "')[1].split('"')[0] for line in out.read_text().splitlines() if '"task": "' in line}
    assert tasks == {"pitch", "onset", "chord", "drums", "instrument"}, tasks


@needs_seccomp
def test_the_filter_is_really_applied(tmp_path):
    """The control: the same unit with the denied calls killing (no ``SystemCallErrorNumber=``), as
    systemd does by default, kills ``import numpy``; so the run above passed through a live filter."""
    killing = tmp_path / "edgemir.service"
    killing.write_text(re.sub(r"(?m)^SystemCallErrorNumber=.*\n", "", UNIT.read_text()))
    r = _under_filter(killing, sys.executable, "-c", "import numpy")
    assert r.returncode == -31, (r.returncode, r.stderr[-500:])  # SIGSYS
    r = _under_filter(killing, sys.executable, "-c", "print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_verifies_and_keeps_its_exposure_low(tmp_path):
    """``systemd-analyze verify`` is clean (with ExecStart pointing at an edgemir that exists) and the
    exposure score stays <= 2; /proc/cpuinfo stays visible (torch reads it on ARM)."""
    text = UNIT.read_text()
    assert not re.search(r"(?m)^(ProcSubset=pid|DeviceAllow=/dev/snd)", text)
    assert re.search(r"(?m)^Restart=always$", text) and "--wait-device" in text
    exe = Path(sys.executable).parent / "edgemir"
    unit = tmp_path / "edgemir.service"
    unit.write_text(text.replace("/opt/edgemir/venv/bin/edgemir", str(exe)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True, text=True)
    m = re.search(r"Overall exposure level for edgemir.service: ([0-9.]+)", r.stdout)
    assert m, r.stdout[-500:] + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout[-300:]
