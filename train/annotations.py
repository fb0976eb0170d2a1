"""Readers and writers for the project's annotation formats (see shared/README.md).

Every reader raises UserError with ``file:line`` on a malformed line, so a user laying out a
real dataset in these formats learns exactly what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemir.errors import UserError
from edgemir.formats import write_drums, write_f0, write_lab, write_label, write_times  # noqa: F401
from edgemir.labels import DRUM_CLASSES, FAMILIES
from edgemir.tasks import REGISTRY


def _lines(path: Path):
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read annotation ({e})") from None
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s and not s.startswith("#"):
            yield i, s


def _bad(path: Path, i: int, why: str) -> UserError:
    return UserError(f"{path}:{i}: {why}")


# -- pitch -----------------------------------------------------------------------------------
def read_f0(path: Path) -> tuple[np.ndarray, np.ndarray]:
    ts, fs = [], []
    for i, s in _lines(path):
        parts = s.split(",")
        if i == 1 and parts[0].strip().lower().startswith("time"):
            continue
        try:
            t, f = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            raise _bad(path, i, f"expected 'time_s,f0_hz', got {s!r}") from None
        if not (np.isfinite(t) and np.isfinite(f)):
            raise _bad(path, i, "non-finite value")
        ts.append(t)
        fs.append(f)
    if not ts:
        raise UserError(f"{path}: no pitch values")
    return np.asarray(ts), np.asarray(fs)


# -- onsets ----------------------------------------------------------------------------------
def read_onsets(path: Path) -> np.ndarray:
    out = []
    for i, s in _lines(path):
        try:
            out.append(float(s.split()[0]))
        except ValueError:
            raise _bad(path, i, f"expected a time in seconds, got {s!r}") from None
    return np.sort(np.asarray(out, dtype=float))


# -- chords ----------------------------------------------------------------------------------
def read_lab(path: Path, vocabulary: tuple[str, ...] | None = None) -> tuple[np.ndarray, list[str]]:
    """(intervals [n,2], labels). With a vocabulary, labels outside it are an error."""
    iv, labs = [], []
    for i, s in _lines(path):
        parts = s.split()
        if len(parts) < 3:
            raise _bad(path, i, f"expected 'start end label', got {s!r}")
        try:
            a, b = float(parts[0]), float(parts[1])
        except ValueError:
            raise _bad(path, i, f"bad time in {s!r}") from None
        if b < a:
            raise _bad(path, i, "end before start")
        lab = " ".join(parts[2:])
        if vocabulary is not None and lab not in vocabulary:
            raise _bad(path, i, f"label {lab!r} not in the vocabulary")
        iv.append((a, b))
        labs.append(lab)
    if not iv:
        raise UserError(f"{path}: no segments")
    return np.asarray(iv, dtype=float), labs


def read_chords(path: Path) -> tuple[np.ndarray, list[str]]:
    """Chord .lab; labels are checked against Harte syntax through mir_eval."""
    import mir_eval

    iv, labs = read_lab(path)
    for k, lab in enumerate(labs):
        try:
            mir_eval.chord.split(lab)
        except Exception:
            raise UserError(f"{path}: segment {k + 1}: {lab!r} is not a Harte chord label") from None
    return iv, labs


# -- drums -----------------------------------------------------------------------------------
def read_drums(path: Path, classes: tuple[str, ...] = DRUM_CLASSES) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {c: [] for c in classes}
    for i, s in _lines(path):
        parts = s.split()
        if len(parts) != 2 or parts[1] not in out:
            raise _bad(path, i, f"expected 'time<TAB>{'|'.join(classes)}', got {s!r}")
        try:
            out[parts[1]].append(float(parts[0]))
        except ValueError:
            raise _bad(path, i, f"bad time in {s!r}") from None
    return {c: np.sort(np.asarray(v, dtype=float)) for c, v in out.items()}


# -- instrument ------------------------------------------------------------------------------
def read_label(path: Path, classes: tuple[str, ...] = FAMILIES) -> str:
    lines = list(_lines(path))
    if len(lines) != 1:
        raise UserError(f"{path}: expected exactly one label")
    i, s = lines[0]
    if s not in classes:
        raise _bad(path, i, f"{s!r} is not one of {', '.join(classes)}")
    return s


def read_instrument_lab(path: Path) -> tuple[np.ndarray, list[str]]:
    return read_lab(path, FAMILIES)


def read_annotation(task: str, path: Path):
    """The reference of one item for a task, in the metrics' native form (by the task's format)."""
    spec = REGISTRY[task]
    if spec.format == "f0":
        return read_f0(path)
    if spec.format == "times":
        return read_onsets(path)
    if spec.format == "events":
        return read_drums(path, spec.classes)
    if spec.format == "segments":
        return read_chords(path)  # spans of Harte labels: references may use any (the metric maps them)
    return read_label(path, spec.classes)


def list_items(task: str, folder: Path) -> list[str]:
    """Item names (stems) of a folder that have a WAV and the task's annotation."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder")
    suf = REGISTRY[task].suffix
    names = sorted(p.name[: -len(suf)] for p in folder.glob("*" + suf))
    if not names:
        raise UserError(f"{folder}: no '*{suf}' annotations for task {task}")
    return names


