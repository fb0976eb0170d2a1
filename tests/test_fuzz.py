"""Property-based fuzzing (hypothesis) of what users hand to ``edgemir analyze``: bundles (cut short,
bytes flipped in the card or the weights) and audio files (random headers, lengths, sample formats,
rates, channels, non-finite values). Every case ends either with exit 0 and valid outputs, or with
one ``error:`` line, exit 2 and nothing left in the output folder; never a traceback.

``make test`` runs 200 cases per kind; ``PYTEST_ARGS="--fuzz-examples 5000" make test`` runs longer.
The CLI runs in this process (``edgemir.cli.main``), so a case costs milliseconds, not a Python start-up.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def examples(request) -> int:
    return int(request.config.getoption("--fuzz-examples"))


def run_main(args: list[str]) -> tuple[int, str]:
    import edgemir.cli
    from edgemir.cli import main

    edgemir.cli.bound_heap = lambda *a: False  # a process-wide malloc setting: not for the test process
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(args)  # an exception escaping here is a traceback for the user: the test fails
    return rc, err.getvalue()


def check_outcome(rc: int, err: str, out: Path, name: str) -> None:
    if rc == 0:
        data = json.loads((out / f"{name}.json").read_text())  # valid, complete JSON
        assert isinstance(data["events"], list)
        assert not list(out.glob("*.part"))
        return
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clip")
    t = np.arange(8000) / 16000
    sf.write(d / "clip.wav", (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16000, subtype="PCM_16")
    return d / "clip.wav"


def test_fuzzed_bundles(tiny_bundles, clip, tmp_path_factory, examples):
    base = next(p for p in sorted(tiny_bundles.glob("*.ts")) if p.name.startswith("onset")).read_bytes()
    card_at = base.index(b'"card_sha256"')
    work = tmp_path_factory.mktemp("fuzz-bundles")
    counter = iter(range(10**9))
    outcomes = {0: 0, 2: 0}

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(kind=st.sampled_from(["truncate", "flip-card", "flip-any"]), cut=st.integers(0, len(base) - 1),
           flips=st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(1, 255)), min_size=1, max_size=4),
           near=st.integers(-2000, 60))
    def case(kind, cut, flips, near):
        data = bytearray(base)
        if kind == "truncate":
            data = data[:cut]
        else:
            for pos, x in flips:
                if kind == "flip-card":
                    pos = min(len(data) - 1, max(0, card_at + near + pos % 64))
                data[pos] ^= x
        i = next(counter)
        bundle = work / f"b{i}.ts"
        bundle.write_bytes(bytes(data))
        out = work / f"out{i}"
        rc, err = run_main(["analyze", str(clip), "--models", str(bundle), "--tasks", "onset", "--out", str(out)])
        check_outcome(rc, err, out, "clip")
        outcomes[rc] += 1
        bundle.unlink()
        shutil.rmtree(out, ignore_errors=True)

    case()
    assert outcomes[2] > 0  # the damage was noticed


FORMATS = [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"), ("WAV", "FLOAT"), ("WAV", "DOUBLE"),
           ("WAV", "ULAW"), ("FLAC", "PCM_16"), ("FLAC", "PCM_24"), ("OGG", "VORBIS"), ("AIFF", "PCM_16")]


def test_fuzzed_audio_files(tiny_bundles, tmp_path_factory, examples):
    work = tmp_path_factory.mktemp("fuzz-audio")
    counter = iter(range(10**9))
    outcomes = {0: 0, 2: 0}

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(fmt=st.sampled_from(FORMATS), rate=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 96000]),
           channels=st.integers(1, 3), frames=st.integers(0, 6000), amp=st.floats(0, 8),
           bad=st.sampled_from(["none", "nan", "inf", "cut", "header", "junk"]), where=st.floats(0, 1),
           junk=st.binary(min_size=0, max_size=200))
    def case(fmt, rate, channels, frames, amp, bad, where, junk):
        container, subtype = fmt
        if container == "OGG" and rate > 48000:
            rate = 48000
        i = next(counter)
        ext = {"WAV": "wav", "FLAC": "flac", "OGG": "ogg", "AIFF": "aiff"}[container]
        path = work / f"a{i}.{ext}"
        rng = np.random.default_rng(i)
        x = (amp * rng.uniform(-1, 1, (frames, channels))).astype(np.float32)
        if bad in ("nan", "inf") and subtype in ("FLOAT", "DOUBLE") and frames:
            x[int(where * (frames - 1)), 0] = np.nan if bad == "nan" else np.inf
        elif subtype not in ("FLOAT", "DOUBLE"):
            x = np.clip(x, -1, 1)
        if bad == "junk":
            path.write_bytes(junk)
        else:
            sf.write(path, x, rate, format=container, subtype=subtype)
            data = bytearray(path.read_bytes())
            if bad == "cut" and len(data) > 1:
                data = data[: max(1, int(where * len(data)))]
            elif bad == "header" and len(data) > 44:
                k = int(where * 40)
                data[k:k + 4] = struct.pack("<I", int(where * 2**32) % 2**32)
            path.write_bytes(bytes(data))
        out = work / f"out{i}"
        rc, err = run_main(["analyze", str(path), "--models", str(tiny_bundles), "--tasks", "onset,pitch",
                            "--out", str(out)])
        check_outcome(rc, err, out, path.stem)
        outcomes[rc] += 1
        path.unlink()
        shutil.rmtree(out, ignore_errors=True)

    case()
    assert outcomes[0] > 0 and outcomes[2] > 0  # both kinds of ending were reached
