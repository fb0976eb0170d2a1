"""A real capture device: PortAudio's JACK host API on the JACK dummy driver (a real clock, no
hardware), fed the exact samples of a rendered clip by a JACK client. ``edgemir run`` on that device
must agree with ``edgemir analyze`` on the same clip.

Why not an ALSA ``type file`` pcm with ``infile``: over the ``null`` slave it has no clock, so every
PortAudio read over-runs and samples are lost between periods; over the ALSA ``jack`` plugin the
device is not listed by PortAudio. JACK's dummy driver gives both a clock and exact samples.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("jackd") is None, reason="jackd (Debian jackd2) not installed")

SERVER = f"edgemirtest{os.getpid()}"


@pytest.fixture()
def jack_server():
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1", JACK_DEFAULT_SERVER=SERVER)
    # -S (synchronous): a late client delays the dummy clock instead of missing cycles. In the default
    # asynchronous mode a busy 2-core VM made JACK skip 4 periods of the capture client mid-clip, with no
    # xrun reported to PortAudio, and the live events after the gap moved 40 ms against the offline ones.
    proc = subprocess.Popen(["jackd", "-S", "-n", SERVER, "-d", "dummy", "-r", "16000", "-p", "160", "-C", "2", "-P", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    if proc.poll() is not None:
        pytest.fail("jackd did not start")
    yield env
    proc.terminate()
    proc.wait(10)


class Player:
    """A JACK client that plays a clip into another client's input port, sample-exact."""

    def __init__(self, clip: np.ndarray) -> None:
        import jack

        self.clip = clip
        self.pos = -1
        self.client = jack.Client("edgemir-test-player", servername=SERVER)
        self.out = self.client.outports.register("out")
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames: int) -> None:
        buf = self.out.get_array()
        buf[:] = 0
        if self.pos >= 0:
            seg = self.clip[self.pos:self.pos + frames]
            buf[: len(seg)] = seg
            self.pos += frames

    def feed(self, port_prefix: str = "PortAudio", timeout: float = 60) -> None:
        end = time.time() + timeout
        while time.time() < end:
            ports = [p for p in self.client.get_ports(is_input=True, is_audio=True) if p.name.startswith(port_prefix)]
            if ports:  # every channel gets the clip, so the down-mix is the clip itself
                time.sleep(0.3)  # ports register one by one
                ports = [p for p in self.client.get_ports(is_input=True, is_audio=True) if p.name.startswith(port_prefix)]
                for tgt in ports:
                    for p in self.client.get_all_connections(tgt):
                        self.client.disconnect(p, tgt)
                    self.client.connect(self.out, tgt)
                time.sleep(0.2)
                self.pos = 0
                return
            time.sleep(0.05)
        raise AssertionError("edgemir's input port never appeared")

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([np.min(np.abs(b - x)) for x in a]) if len(b) else np.full(len(a), np.inf)


def test_live_device_agrees_with_offline_analysis(jack_server, tiny_bundles, tiny_data, tmp_path):
    from edgemir.audio_io import read_audio

    wav = sorted((tiny_data("chord") / "test").glob("*.wav"))[0]
    clip = read_audio(wav)
    dur = len(clip) / 16000
    env = dict(jack_server, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "edgemir", "analyze", str(wav), "--models", str(tiny_bundles), "--tasks",
                        "onset,chord", "--out", str(tmp_path)], env=env, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    offline = json.loads((tmp_path / f"{wav.stem}.json").read_text())["events"]

    player = Player(clip)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "edgemir", "run", "--device", "system", "--models", str(tiny_bundles),
                                 "--tasks", "onset,chord", "--no-display", "--jsonl", "-", "--duration", str(dur + 3)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        player.feed()
        out, err = proc.communicate(timeout=dur + 120)
    finally:
        player.close()
    assert proc.returncode == 0, err.decode()
    live = [json.loads(line) for line in out.decode().splitlines()]
    assert all(e["latency_ms"] is not None and e["latency_ms"] > 0 for e in live)

    on_off = np.array([e["t"] for e in offline if e["task"] == "onset"])
    on_live = np.array([e["t"] for e in live if e["task"] == "onset"])
    assert len(on_off) >= 5
    # the clip starts after some silence: a whole number of 10 ms hops (JACK period = hop); take
    # the shift that lines up the most onsets
    def matched(off: float) -> float:
        sh = on_live - off
        sh = sh[(sh >= 0) & (sh <= dur)]
        return float(np.mean(_nearest(on_off, sh) <= 0.0101))

    offset = max(np.arange(0, 300) / 100, key=matched)
    shifted = on_live - offset
    shifted = shifted[(shifted >= 0) & (shifted <= dur)]
    assert np.mean(_nearest(on_off, shifted) <= 0.0101) >= 0.95
    assert np.mean(_nearest(shifted, on_off) <= 0.0101) >= 0.95

    def label_at(events, shift, t):
        lab = "N"
        for e in events:
            if e["task"] == "chord" and e["t"] - shift <= t + 1e-9:
                lab = e["value"]
        return lab

    # the live chord filter first ran on silence: compare once both have settled (after 2 s)
    grid = np.arange(2.0, dur, 0.1)
    agree = np.mean([label_at(offline, 0.0, t) == label_at(live, offset, t) for t in grid])
    assert agree >= 0.95, agree
