"""Event outputs: JSON lines, OSC, and the per-file formats written by ``edgemir analyze``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from edgemir import formats as fmt
from edgemir.decoders import Event
from edgemir.errors import UserError


def event_dict(e: Event, latency_ms: float | None) -> dict:
    d = {"t": round(e.t, 4), "task": e.task, "value": e.value if not isinstance(e.value, float) else round(e.value, 3),
         "confidence": round(float(e.confidence), 4), "latency_ms": None if latency_ms is None else round(latency_ms, 2)}
    if "velocity" in e.extra:
        d["velocity"] = round(float(e.extra["velocity"]), 3)
    return d


class JsonlSink:
    """One JSON object per event; ``-`` writes to stdout."""

    def __init__(self, target: str) -> None:
        if target == "-":
            self.f = sys.stdout
            self.close_it = False
        else:
            try:
                self.f = open(target, "a", buffering=1)
            except OSError as e:
                raise UserError(f"cannot write JSON lines to {target}: {e.strerror}") from None
            self.close_it = True

    def emit(self, e: Event, latency_ms: float | None) -> None:
        self.f.write(json.dumps(event_dict(e, latency_ms)) + "\n")

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.flush()
        if self.close_it:
            self.f.close()


class OscSink:
    """OSC over UDP (python-osc): /edgemir/pitch f0 conf, /edgemir/onset strength, /edgemir/chord label,
    /edgemir/drum class velocity, /edgemir/instrument family conf."""

    def __init__(self, target: str) -> None:
        from pythonosc.udp_client import SimpleUDPClient

        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"--osc expects HOST:PORT, got {target!r}")
        self.client = SimpleUDPClient(host, int(port))

    def emit(self, e: Event, latency_ms: float | None) -> None:
        c = float(e.confidence)
        try:
            if e.task == "pitch":
                if e.value > 0:
                    self.client.send_message("/edgemir/pitch", [float(e.value), c])
            elif e.task == "onset":
                self.client.send_message("/edgemir/onset", [float(e.value)])
            elif e.task == "chord":
                self.client.send_message("/edgemir/chord", [str(e.value)])
            elif e.task == "drums":
                self.client.send_message("/edgemir/drum", [str(e.value), float(e.extra.get("velocity", c))])
            elif e.task == "instrument":
                self.client.send_message("/edgemir/instrument", [str(e.value), c])
        except OSError:
            pass  # an unreachable OSC peer must never stop the analysis

    def flush(self) -> None: ...

    def close(self) -> None: ...


def write_analysis(out: Path, name: str, events: list[Event], duration: float, summary: dict, tasks: list[str],
                   long_file_s: float = 8.0) -> list[Path]:
    """Write the project's annotation formats for one analysed file, plus ``<name>.json``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    by = {t: [e for e in events if e.task == t] for t in tasks}
    writers = {
        "pitch": (".f0.csv", lambda ev: fmt.write_f0(path, [e.t for e in ev], [e.value for e in ev])),
        "onset": (".onsets", lambda ev: fmt.write_times(path, [e.t for e in ev])),
        "chord": (".lab", lambda ev: fmt.write_lab(path, fmt.chord_segments([(e.t, e.value) for e in ev], duration))),
        "drums": (".drums", lambda ev: fmt.write_drums(path, [(e.t, e.value) for e in ev])),
    }
    for task, (suffix, write) in writers.items():
        if task in by:
            path = out / f"{name}{suffix}"
            write(by[task])
            written.append(path)
    if "instrument" in by:
        whole, windows = summary.get("instrument", (None, []))
        p = out / f"{name}.label"
        p.write_text((whole or "unknown") + "\n")
        written.append(p)
        if duration > long_file_s:
            q = out / f"{name}.instrument.lab"
            q.write_text("".join(f"{a:.4f} {min(b, duration):.4f} {fam}\n" for a, b, fam in windows))
            written.append(q)
    j = out / f"{name}.json"
    j.write_text(json.dumps({"name": name, "duration": duration, "tasks": tasks,
                             "summary": {k: v for k, v in summary.items() if k != "instrument"} |
                             ({"instrument": {"family": summary["instrument"][0],
                                              "windows": summary["instrument"][1]}} if "instrument" in summary else {}),
                             "events": [event_dict(e, None) for e in events]}, default=_np))
    written.append(j)
    return written


def _np(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o))
