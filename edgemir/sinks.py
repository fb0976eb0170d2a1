"""Event outputs: JSON lines, OSC, and the per-file formats written by ``edgemir analyze``."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from edgemir import formats as fmt
from edgemir.decoders import Event
from edgemir.errors import UserError
from edgemir.labels import NO_FAMILY
from edgemir.tasks import REGISTRY


def _num(x, digits: int) -> float | None:
    """A rounded finite number, or None (JSON has no NaN)."""
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def event_dict(e: Event, latency_ms: float | None) -> dict:
    d = {"t": _num(e.t, 4), "task": e.task, "value": e.value if not isinstance(e.value, float) else _num(e.value, 3),
         "confidence": _num(e.confidence, 4), "latency_ms": None if latency_ms is None else _num(latency_ms, 2)}
    if "velocity" in e.extra:
        d["velocity"] = _num(e.extra["velocity"], 3)
    return d


class JsonlSink:
    """One JSON object per event; ``-`` writes to stdout. Each line is written whole: when the disk
    fills, the file is cut back to its last complete line and the run stops with a one-line error."""

    def __init__(self, target: str) -> None:
        self.target = target
        if target == "-":
            self.fd = None
        else:
            try:
                self.fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            except OSError as e:
                raise UserError(f"cannot write JSON lines to {target}: {e.strerror}") from None
            self.good = os.lseek(self.fd, 0, os.SEEK_END)  # the end of the last complete line

    def emit(self, e: Event, latency_ms: float | None) -> None:
        line = _EVENT_JSON.encode(event_dict(e, latency_ms)) + "\n"
        if self.fd is None:
            sys.stdout.write(line)
            return
        data = line.encode()
        try:
            n = os.write(self.fd, data)
            if n != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.good)
            raise UserError(f"cannot write JSON lines to {self.target}: {err.strerror}") from None
        self.good += n

    def flush(self) -> None:
        if self.fd is None:
            sys.stdout.flush()

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        else:
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.flush()


class OscSink:
    """OSC over UDP (python-osc): /edgemir/pitch f0 conf (f0 0.0 once when the voice stops),
    /edgemir/onset strength, /edgemir/chord label, /edgemir/drum class velocity,
    /edgemir/instrument family conf. Each message travels in an OSC bundle whose time tag is the
    wall-clock time its sound reached edgemir (now minus the event's latency)."""

    def __init__(self, target: str) -> None:
        import socket

        from pythonosc.udp_client import UDPClient

        host, _, port = target.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise UserError(f"--osc expects HOST:PORT with a port in 1..65535, got {target!r}")
        try:
            socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as e:
            raise UserError(f"--osc: cannot resolve host {host!r} ({getattr(e, 'strerror', None) or e})") from None
        self.client = UDPClient(host, int(port))
        self.voiced: set[str] = set()  # f0 tasks whose last message was a voiced frame

    def _message(self, e: Event) -> tuple[str, list] | None:
        c = float(e.confidence)
        spec = REGISTRY.get(e.task)
        if spec is None:
            return None
        if spec.format == "f0":
            if e.value > 0:
                self.voiced.add(e.task)
                return spec.osc, [float(e.value), c]
            if e.task in self.voiced:  # the voice stopped: tell the receiver once, so no note hangs
                self.voiced.discard(e.task)
                return spec.osc, [0.0, c]
            return None
        if spec.format == "times":
            return spec.osc, [float(e.value)]
        if spec.format == "events":
            return spec.osc, [str(e.value), float(e.extra.get("velocity", c))]
        if spec.format == "segments":
            return spec.osc, [str(e.value)]
        return spec.osc, [str(e.value), c]

    def emit(self, e: Event, latency_ms: float | None) -> None:
        from pythonosc.osc_bundle_builder import OscBundleBuilder
        from pythonosc.osc_message_builder import OscMessageBuilder

        m = self._message(e)
        if m is None:
            return
        msg = OscMessageBuilder(address=m[0])
        for a in m[1]:
            msg.add_arg(a)
        when = time.time() - (latency_ms or 0.0) / 1000 if latency_ms is not None and math.isfinite(latency_ms) \
            else time.time()
        bundle = OscBundleBuilder(when)
        bundle.add_content(msg.build())
        try:
            self.client.send(bundle.build())
        except OSError:
            pass  # an unreachable OSC peer must never stop the analysis

    def flush(self) -> None: ...

    def close(self) -> None: ...


class AnalysisWriter:
    """One analysed file's outputs, written as events arrive so memory stays flat on long files:
    ``<name>`` plus each task's suffix (``.f0.csv``, ``.onsets``, ``.drums``, ``.lab``, ``.label``, and
    ``.instrument.lab`` per window on long files) and ``<name>.json`` with every event. Files take their
    final names only on ``close``; ``abort`` removes them, so a failed analysis never leaves half-written
    results."""

    # formats written line by line as events arrive: (time, value) -> one line
    LINES = {"f0": fmt.f0_line, "times": lambda t, _: fmt.time_line(t), "events": fmt.drum_line}

    def __init__(self, out: Path, name: str, tasks: list[str], duration: float) -> None:
        self.out, self.name, self.tasks, self.duration = Path(out), name, tasks, duration
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot write to {out}: {e.strerror}") from None
        self.parts: dict[Path, Path] = {}
        self.files = {t: self._open(REGISTRY[t].suffix) for t in tasks if REGISTRY[t].format in self.LINES}
        self.line = {t: self.LINES[REGISTRY[t].format] for t in self.files}  # chosen once, not per event
        self.json = self._open(".json")
        self.json.write(json.dumps({"name": name, "duration": duration, "tasks": tasks})[:-1] + ', "events": [')
        self.n_json = 0
        self.segments: dict[str, list[tuple[float, str]]] = {t: [] for t in tasks if REGISTRY[t].format == "segments"}

    def _open(self, suffix: str):
        final = self.out / f"{self.name}{suffix}"
        part = final.with_name(final.name + ".part")
        self.parts[final] = part
        try:
            return open(part, "w")
        except OSError as e:
            self.abort()
            raise UserError(f"cannot write to {self.out}: {e.strerror}") from None

    def emit(self, e: Event, latency_ms: float | None = None) -> None:
        if e.t > self.duration + 1e-9:  # outputs of the silent right context after the end
            return
        if e.task in self.files:
            self.files[e.task].write(self.line[e.task](e.t, e.value))
        elif e.task in self.segments:
            self.segments[e.task].append((e.t, e.value))  # changes only: a few per minute
        self.json.write(("," if self.n_json else "") + _EVENT_JSON.encode(event_dict(e, None)))
        self.n_json += 1

    def flush(self) -> None: ...

    def close(self, summary: dict, long_file_s: float = 8.0) -> list[Path]:
        """Write what needs the whole stream (segments, file labels) and publish."""
        for t, changes in self.segments.items():
            with self._open(REGISTRY[t].suffix) as f:
                f.write("".join(fmt.lab_line(*s) for s in fmt.chord_segments(changes, self.duration)))
        js = dict(summary)
        for t in (t for t in self.tasks if REGISTRY[t].format == "label"):
            whole, windows = summary.get(t, (None, []))
            with self._open(REGISTRY[t].suffix) as f:
                f.write((whole or NO_FAMILY) + "\n")
            if self.duration > long_file_s:
                with self._open(f".{t}.lab") as f:
                    f.write("".join(fmt.lab_line(a, min(b, self.duration), lab) for a, b, lab in windows))
            js[t] = {"family": whole, "windows": windows}
        self.json.write('], "summary": ' + json.dumps(js, default=_np) + "}")
        for f in [*self.files.values(), self.json]:
            f.close()
        written = []
        for final, part in self.parts.items():
            part.replace(final)
            written.append(final)
        return written

    def abort(self) -> None:
        """Remove every temporary file; never raises (it runs on a full disk, or on SIGTERM)."""
        for f in [*getattr(self, "files", {}).values(), getattr(self, "json", None)]:
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        for part in self.parts.values():
            with contextlib.suppress(OSError):
                part.unlink(missing_ok=True)


def _np(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o))


# one encoder for every event (``json.dumps`` with options builds a new one per call: a hundred pitch events a
# second); the same text as ``json.dumps(..., default=_np, allow_nan=False)``
_EVENT_JSON = json.JSONEncoder(default=_np, allow_nan=False)
