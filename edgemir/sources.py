"""Audio sources: a live input device (sounddevice) or a file, paced in real time or unpaced.

The device callback only copies samples into a preallocated ring buffer (no allocation, no
blocking, no model); the worker reads whole hops from it. Down-mixing and resampling to 16 kHz
happen here, at the source.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from edgemir.errors import UserError
from edgemir.labels import SAMPLE_RATE


class RingBuffer:
    """Single-producer single-consumer float32 ring; the producer never blocks (overflow counted)."""

    def __init__(self, capacity: int) -> None:
        self.buf = np.zeros(capacity, dtype=np.float32)
        self.cap = capacity
        self.w = 0  # total samples written
        self.r = 0  # total samples read
        self.overflows = 0

    def write(self, x: np.ndarray) -> None:
        n = len(x)
        if self.w + n - self.r > self.cap:  # the reader is too slow: drop this block
            self.overflows += 1
            return
        i = self.w % self.cap
        k = min(n, self.cap - i)
        self.buf[i:i + k] = x[:k]
        if k < n:
            self.buf[: n - k] = x[k:]
        self.w += n

    def available(self) -> int:
        return self.w - self.r

    def read(self, n: int) -> np.ndarray:
        n = min(n, self.available())
        i = self.r % self.cap
        k = min(n, self.cap - i)
        out = np.concatenate([self.buf[i:i + k], self.buf[: n - k]]) if k < n else self.buf[i:i + k].copy()
        self.r += n
        return out


class Source:
    """Base: ``read(n)`` returns up to n samples (empty when none yet), None at the end."""

    name = "source"
    xruns = 0
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


class DeviceSource(Source):
    """A sounddevice InputStream feeding a ring buffer; resampled to 16 kHz with soxr when needed."""

    def __init__(self, device: str | int | None, blocksize: int = 160, seconds: float = 4.0) -> None:
        import sounddevice as sd

        self.sd = sd
        try:
            info = sd.query_devices(device, "input")
        except Exception as e:
            raise UserError(f"no input device {device!r} ({str(e).splitlines()[0]}); see 'edgemir devices'") from None
        self.device = info["index"] if isinstance(info, dict) and "index" in info else device
        self.channels = max(1, min(2, int(info["max_input_channels"])))
        self.rate = SAMPLE_RATE
        try:
            sd.check_input_settings(self.device, channels=self.channels, samplerate=SAMPLE_RATE, dtype="float32")
        except Exception:
            self.rate = int(info["default_samplerate"])
        self.name = f"device {info['name']} @ {self.rate} Hz"
        self.ring = RingBuffer(int(seconds * self.rate))
        self.resampler = None
        if self.rate != SAMPLE_RATE:
            import soxr

            self.resampler = soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32")
        self.blocksize = blocksize if self.rate == SAMPLE_RATE else int(blocksize * self.rate / SAMPLE_RATE)
        self._mix = np.zeros(8192, dtype=np.float32)
        self.status_flags = 0
        self.clock: list[tuple[int, float]] = []  # (samples written at 16 kHz, perf_counter) per read
        self.stream = None
        self.out_count = 0
        self.ended = threading.Event()
        self.error: str | None = None

    def _callback(self, indata, frames, time_info, status) -> None:
        # Realtime thread: copy only. Down-mix into a preallocated buffer, then the ring.
        if status.input_overflow:
            self.status_flags += 1
        mix = self._mix[:frames]
        if self.channels == 1:
            mix[:] = indata[:, 0]
        else:
            np.mean(indata, axis=1, out=mix)
        self.ring.write(mix)

    def _finished(self) -> None:
        self.ended.set()

    def start(self) -> None:
        if self.stream is not None:
            return
        try:
            self.stream = self.sd.InputStream(device=self.device, channels=self.channels, samplerate=self.rate,
                                              blocksize=self.blocksize, dtype="float32", callback=self._callback,
                                              finished_callback=self._finished)
            self.stream.start()
        except Exception as e:
            raise UserError(f"cannot open input device {self.device!r}: {str(e).splitlines()[0]}") from None

    @property
    def xruns(self) -> int:  # type: ignore[override]
        return self.status_flags + self.ring.overflows

    def stop(self) -> None:
        if self.stream is not None:
            try:
                self.stream.stop()
                self.stream.close()
            except Exception:
                pass
            self.stream = None

    @property
    def active(self) -> bool:
        return self.stream is not None and self.stream.active and not self.ended.is_set()

    def read(self, n: int) -> np.ndarray | None:
        avail = self.ring.available()
        if avail == 0:
            if not self.active:
                return None
            return np.zeros(0, dtype=np.float32)
        x = self.ring.read(avail)
        now = time.perf_counter()
        if self.resampler is not None:
            x = self.resampler.resample_chunk(x)
        bad = ~np.isfinite(x)
        if bad.any():
            self.nonfinite += int(bad.sum())
            x = np.where(bad, 0.0, x).astype(np.float32)
        self.out_count += len(x)
        self.clock.append((self.out_count, now))
        self.clock = self.clock[-64:]
        return x

    def arrival_time(self, sample: int) -> float | None:
        for count, t in self.clock:
            if count >= sample:
                return t
        return None


class LiveInput(Source):
    """A device that may come and go (USB microphone unplugged, audio server restarted): on loss it
    logs, closes the stream, and re-opens with back-off; reads meanwhile return no samples, so the
    worker loop (and its watchdog pings) keep running. Never ends by itself."""

    def __init__(self, device: str | int | None, log=print, backoff: tuple[float, float] = (0.5, 30.0)) -> None:
        self.device = device
        self.log = log
        self.backoff0, self.backoff_max = backoff
        self.inner: DeviceSource | None = None
        self.retry_at = 0.0
        self.delay = self.backoff0
        self.reconnects = 0
        self.lost_xruns = 0
        self.total = 0  # samples returned so far (the engine's timeline)
        self.base = 0  # self.total when the current device was opened
        self._open(first=True)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name if self.inner else f"device {self.device!r} (waiting)"

    @property
    def xruns(self) -> int:  # type: ignore[override]
        return self.lost_xruns + (self.inner.xruns if self.inner else 0)

    def _open(self, first: bool = False) -> bool:
        if not first:
            _rescan_devices()
        try:
            src = DeviceSource(self.device)
            src.start()
        except UserError as e:
            if first:
                raise
            self.log(f"input device still unavailable ({e}); next try in {self.delay:.1f} s")
            self.retry_at = time.monotonic() + self.delay
            self.delay = min(self.delay * 2, self.backoff_max)
            return False
        self.inner = src
        self.base = self.total
        self.delay = self.backoff0
        if not first:
            self.reconnects += 1
            self.log(f"input device re-opened: {src.name}")
        return True

    def start(self) -> None:
        pass  # opened in __init__ (so a missing device is reported before anything else starts)

    def stop(self) -> None:
        if self.inner:
            self.inner.stop()
            self.inner = None

    def read(self, n: int) -> np.ndarray:
        if self.inner is not None:
            x = self.inner.read(n)
            if x is not None:
                self.total += len(x)
                return x
            self.log(f"input device lost ({self.inner.name}); re-opening with back-off")
            self.lost_xruns += self.inner.xruns
            if not _stop_within(self.inner, 3.0):
                # PortAudio's JACK backend blocks forever in Pa_StopStream once the server is gone, and
                # re-initialising PortAudio would block on that stream too: only a new process recovers.
                raise BackendWedged("the audio backend does not release the lost stream")
            self.inner = None
            self.retry_at = time.monotonic() + self.delay
        elif time.monotonic() >= self.retry_at:
            self._open()
        return np.zeros(0, dtype=np.float32)

    def arrival_time(self, sample: int) -> float | None:
        return self.inner.arrival_time(sample - self.base) if self.inner else None


class BackendWedged(RuntimeError):
    """The audio library cannot recover in this process; the service manager should restart it."""


def _stop_within(src: DeviceSource, seconds: float) -> bool:
    t = threading.Thread(target=src.stop, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive()


def _rescan_devices() -> None:
    """Re-initialise PortAudio so that devices (and audio servers) that came back are seen again.
    sounddevice has no public call for this; its _terminate/_initialize pair is the documented way
    in its issue tracker."""
    import sounddevice as sd

    try:
        sd._terminate()
        sd._initialize()
    except Exception:
        pass
