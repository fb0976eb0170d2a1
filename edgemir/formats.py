"""Writers of the project's annotation formats, shared by ``edgemir analyze`` and the data generator."""

from __future__ import annotations

from pathlib import Path


def f0_line(t: float, f0: float) -> str:
    return f"{t:.2f},{f0:.3f}\n"


def time_line(t: float) -> str:
    return f"{t:.4f}\n"


def lab_line(a: float, b: float, label: str) -> str:
    return f"{a:.4f} {b:.4f} {label}\n"


def drum_line(t: float, cls: str) -> str:
    return f"{t:.4f}\t{cls}\n"


def write_f0(path: Path, times, f0) -> None:
    Path(path).write_text("".join(f0_line(t, v) for t, v in zip(times, f0)))


def write_times(path: Path, times) -> None:
    Path(path).write_text("".join(time_line(t) for t in times))


def write_lab(path: Path, segments) -> None:
    Path(path).write_text("".join(lab_line(a, b, lab) for a, b, lab in segments))


def write_drums(path: Path, events) -> None:
    Path(path).write_text("".join(drum_line(t, c) for t, c in events))


def write_label(path: Path, family: str) -> None:
    Path(path).write_text(family + "\n")


def chord_segments(changes: list[tuple[float, str]], duration: float) -> list[tuple[float, float, str]]:
    """(start, end, label) segments from chord-change events, N before the first and when none."""
    segs = [(t, changes[i + 1][0] if i + 1 < len(changes) else duration, lab) for i, (t, lab) in enumerate(changes)]
    if not segs:
        return [(0.0, duration, "N")]
    if segs[0][0] > 0:
        segs.insert(0, (0.0, segs[0][0], "N"))
    return [s for s in segs if s[1] > s[0]]
