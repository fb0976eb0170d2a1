"""Audio sources: a live input device that may come and go, or a file (streamed from disk, paced
in real time or unpaced). Down-mixing and resampling to 16 kHz happen at the source; the device
itself is captured in a child process (``edgemir.capture``) whose callback only copies samples.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgemir.capture import ProcessDeviceSource
from edgemir.errors import UserError
from edgemir.labels import SAMPLE_RATE


class Source:
    """Base: ``read(n)`` returns up to n samples (empty when none yet), None at the end."""

    name = "source"
    xruns = 0
    gap_seconds = 0.0
    nonfinite = 0

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def read(self, n: int) -> np.ndarray | None:
        raise NotImplementedError

    def arrival_time(self, sample: int) -> float | None:
        """Wall time (perf_counter) at which sample index ``sample`` arrived, if known."""
        return None


class ArrayReader:
    """The reader interface of ``AudioReader`` over samples already in memory."""

    def __init__(self, audio: np.ndarray) -> None:
        self.audio = np.asarray(audio, dtype=np.float32)
        self.duration = len(self.audio) / SAMPLE_RATE
        self.pos = 0

    def rewind(self) -> None:
        self.pos = 0

    def read(self, n: int) -> np.ndarray | None:
        if self.pos >= len(self.audio):
            return None
        out = self.audio[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def close(self) -> None: ...


class FileSource(Source):
    """A file streamed from disk (or an array), unpaced or paced in real time, optionally looped."""

    def __init__(self, path: Path, realtime: bool = False, loop: bool = False, reader=None) -> None:
        from edgemir.audio_io import AudioReader

        self.path = Path(path)
        self.name = f"file {self.path.name}" + (" (real time)" if realtime else "")
        self.reader = reader if reader is not None else AudioReader(self.path)
        self.duration = self.reader.duration
        self.realtime = realtime
        self.loop = loop
        self.pos = 0  # samples delivered since the start (or the last loop)
        self.base = 0  # samples delivered before the last loop
        self.t0 = 0.0

    @classmethod
    def from_array(cls, audio: np.ndarray, name: str = "memory", realtime: bool = False, loop: bool = False) -> FileSource:
        """A file source over samples already in memory (benchmarks, tests)."""
        return cls(Path(name), realtime=realtime, loop=loop, reader=ArrayReader(audio))

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        self.reader.close()

    def read(self, n: int) -> np.ndarray | None:
        if self.realtime:
            due = int((time.perf_counter() - self.t0) * SAMPLE_RATE)
            n = min(n, max(0, due - self.pos))
            if n == 0:
                return np.zeros(0, dtype=np.float32)
        out = self.reader.read(n)
        if out is None:
            if not self.loop or self.pos == 0:
                return None
            self.reader.rewind()
            self.base += self.pos
            self.pos, self.t0 = 0, time.perf_counter()
            return np.zeros(0, dtype=np.float32)
        self.pos += len(out)
        return out

    def arrival_time(self, sample: int) -> float | None:
        if not self.realtime:
            return None
        return self.t0 + (sample - self.base) / SAMPLE_RATE


class LiveInput(Source):
    """A device that may come and go (USB microphone unplugged, audio server restarted): on loss it
    logs, closes the stream, and re-opens with back-off; reads meanwhile return no samples, so the
    worker loop (and its watchdog pings) keep running. Never ends by itself.

    ``wait=True`` (the service): a device missing at start is waited for in the same way instead
    of being an error."""

    def __init__(self, device: str | int | None, log=print, backoff: tuple[float, float] = (0.5, 5.0),
                 wait: bool = False) -> None:
        self.device = device
        self.log = log
        self.backoff0, self.backoff_max = backoff
        self.inner: ProcessDeviceSource | None = None
        self.retry_at = 0.0
        self.delay = self.backoff0
        self.reconnects = 0
        self.lost_xruns = 0
        self.gaps_before = 0.0  # clock gaps of earlier (closed) devices
        self.total = 0  # samples returned so far (the engine's timeline)
        self.base = 0  # self.total when the current device was opened
        self.waiting_since: float | None = None  # monotonic time the device went missing
        self.last_log = 0.0
        self._open(first=not wait)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name if self.inner else f"device {self.device!r} (waiting)"

    @property
    def xruns(self) -> int:  # type: ignore[override]
        return self.lost_xruns + (self.inner.xruns if self.inner else 0)

    @property
    def gap_seconds(self) -> float:  # type: ignore[override]
        return self.gaps_before + (self.inner.gap_seconds if self.inner else 0.0)

    def _open(self, first: bool = False) -> bool:
        try:
            src = ProcessDeviceSource(self.device)  # a fresh capture process sees devices that came back
        except UserError as e:
            if first:
                raise
            now = time.monotonic()
            if self.waiting_since is None:
                self.waiting_since = now
                self.log(f"waiting for input device: {e}; retrying every {self.backoff_max:.0f} s at most")
                self.last_log = now
            elif now - self.last_log >= 60:  # a line a minute, not one per retry
                self.log(f"still waiting for input device ({now - self.waiting_since:.0f} s): {e}")
                self.last_log = now
            self.retry_at = now + self.delay
            self.delay = min(self.delay * 2, self.backoff_max)
            return False
        self.inner = src
        self.base = self.total
        self.delay = self.backoff0
        if not first:
            waited = f" after {time.monotonic() - self.waiting_since:.1f} s" if self.waiting_since is not None else ""
            if self.reconnects or self.total:
                self.reconnects += 1
                self.log(f"input device re-opened{waited}: {src.name}")
            else:
                self.log(f"input device opened{waited}: {src.name}")
        self.waiting_since = None
        return True

    def start(self) -> None:
        pass  # opened in __init__ (so a missing device is reported before anything else starts)

    def stop(self) -> None:
        if self.inner:
            self._close()

    def _close(self) -> None:
        """Keep the device's counts (the run's summary reads them after the stop), then kill it."""
        self.lost_xruns += self.inner.xruns
        self.gaps_before += self.inner.gap_seconds
        self.inner.stop()  # kills the capture process, whatever state its backend is in
        self.inner = None

    def read(self, n: int) -> np.ndarray:
        if self.inner is not None:
            x = self.inner.read(n)
            if x is not None:
                self.total += len(x)
                return x
            self.log(f"input device lost ({self.inner.name}); re-opening with back-off")
            self._close()
            self.waiting_since = self.last_log = time.monotonic()
            self.retry_at = self.waiting_since + self.delay
        elif time.monotonic() >= self.retry_at:
            self._open()
        return np.zeros(0, dtype=np.float32)

    def arrival_time(self, sample: int) -> float | None:
        return self.inner.arrival_time(sample - self.base) if self.inner else None
