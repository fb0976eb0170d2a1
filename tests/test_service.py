"""Service behaviour: systemd notifications, config, device loss and recovery."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import ROOT

from edgemir.app import Pipeline, build_engine, load_models
from edgemir.notify import Notifier
from edgemir.sources import FileSource


def _listen(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(0.2)
    got: list[tuple[float, str]] = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                got.append((time.monotonic(), s.recv(256).decode()))
            except TimeoutError:
                pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return got, stop


def test_ready_and_watchdog_reach_notify_socket(tiny_bundles, tiny_data, tmp_path):
    sock = tmp_path / "notify.sock"
    got, stop = _listen(sock)
    wav = sorted((tiny_data("onset") / "test").glob("*.wav"))[0]
    env = dict(os.environ, NOTIFY_SOCKET=str(sock), WATCHDOG_USEC="200000", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "edgemir", "run", "--file", str(wav), "--realtime", "--no-display",
                        "--models", str(tiny_bundles), "--tasks", "onset", "--duration", "3"], env=env,
                       capture_output=True, timeout=120)
    time.sleep(0.3)
    stop.set()
    assert r.returncode == 0, r.stderr.decode()
    msgs = [m for _, m in got]
    assert msgs[0] == "READY=1"
    assert msgs.count("WATCHDOG=1") >= 10  # every 100 ms over 3 s
    assert msgs[-1] == "STOPPING=1"


def test_a_stalled_worker_stops_the_pings(tiny_bundles, tmp_path, monkeypatch):
    sock = tmp_path / "n.sock"
    got, stop = _listen(sock)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock))
    bundles = load_models(["onset"], tiny_bundles)
    engine = build_engine(bundles)
    calls = {"n": 0}
    real_push = engine.push_each

    def push_each(x, final=False):
        calls["n"] += 1
        if calls["n"] == 20:
            time.sleep(1.5)  # the worker is stuck in a model
        return real_push(x, final)

    engine.push_each = push_each
    src = FileSource.from_array(np.zeros(16000 * 3, np.float32), realtime=True)
    runner = Pipeline(src, engine, [], notify=Notifier(interval_s=0.05))
    src.start()
    while runner.step(max_samples=1600):
        pass
    time.sleep(0.3)
    stop.set()
    pings = [t for t, m in got if m == "WATCHDOG=1"]
    gaps = np.diff(pings)
    assert gaps.max() >= 1.4  # silence while stalled
    assert np.median(gaps) < 0.2 and len(pings) > 20  # regular before and after


def test_invalid_config_is_one_line(tmp_path, tiny_bundles):
    cfg = tmp_path / "edgemir.toml"
    cfg.write_text('[run]\nthreads = "two"\n')
    r = subprocess.run([sys.executable, "-m", "edgemir", "run", "--config", str(cfg), "--models", str(tiny_bundles)],
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, timeout=60)
    assert r.returncode == 2 and b"run.threads must be an integer" in r.stderr and b"Traceback" not in r.stderr
    cfg.write_text("[run]\ntaskz = []\n")
    r = subprocess.run([sys.executable, "-m", "edgemir", "run", "--config", str(cfg)],
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, timeout=60)
    assert r.returncode == 2 and b"unknown key run.taskz" in r.stderr
    from edgemir.config import decoder_overrides, load_config

    cfg.write_text('[run]\ntasks = ["onset"]\nthreads = 1\n[thresholds]\nonset = 0.3\ndrums = [0.4, 0.5, 0.6]\n')
    d = decoder_overrides(load_config(cfg))
    assert d == {"onset": {"threshold": 0.3}, "drums": {"thresholds": (0.4, 0.5, 0.6)}}


@pytest.mark.skipif(subprocess.run(["which", "jackd"], capture_output=True).returncode != 0, reason="no jackd")
def test_service_waits_for_its_device_and_pings_through_a_long_loss(tiny_bundles, tmp_path):
    """The service's mode (``--wait-device``, a notify socket, the unit's WatchdogSec=10) on a real
    JACK capture device. Started before the audio server exists, edgemir waits for it (alive,
    pinging, saying so); when the server comes, events flow; the server then dies for 15 s, longer
    than WatchdogSec: the pings go on throughout, the process stays up (its capture process is
    replaced), and events flow again once the server is back.

    Before: ``Pipeline.step`` returned on empty reads without pinging (a 4-s loss left a 3.9-s gap
    in the pings, so a loss past WatchdogSec got the service killed), and with no device at start
    the service played the demo clip and exited 0 (``Restart=on-failure`` left it stopped)."""
    server = f"edgemirloss{os.getpid()}"
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1", JACK_DEFAULT_SERVER=server, PYTHONPATH=str(ROOT),
               NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="10000000")
    got, stop_listening = _listen(tmp_path / "notify.sock")

    def jack():
        j = subprocess.Popen(["jackd", "-n", server, "-d", "dummy", "-r", "16000", "-p", "160"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        return j

    def lines() -> int:
        return len(out.read_text().splitlines()) if out.exists() else 0

    def wait_for(n: int, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and lines() < n:
            assert proc.poll() is None, proc.communicate()[1].decode()
            time.sleep(0.2)
        assert lines() >= n

    out = tmp_path / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "edgemir", "run", "--device", "system", "--wait-device",
                             "--models", str(tiny_bundles), "--tasks", "pitch", "--no-display", "--jsonl", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    j = None
    try:
        time.sleep(5)  # no server yet: the service waits
        assert proc.poll() is None
        j = jack()
        wait_for(100)
        j.terminate()  # (a SIGKILLed jackd leaves its entry in JACK's shared registry, which holds few)
        j.wait()
        lost = time.monotonic()
        time.sleep(15)  # longer than WatchdogSec
        assert proc.poll() is None
        back = time.monotonic()
        before = lines()
        j = jack()
        wait_for(before + 100)  # re-opened: events flow again
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        stop_listening.set()
        if proc.poll() is None:
            proc.kill()
        if j is not None and j.poll() is None:  # SIGTERM: a SIGKILLed jackd stays in JACK's small shared registry
            j.terminate()
            try:
                j.wait(10)
            except subprocess.TimeoutExpired:
                j.kill()
    err = err.decode()
    assert proc.returncode == 0, err
    assert "waiting for input device" in err and "input device opened" in err, err
    assert "input device lost" in err and "input device re-opened" in err and "Traceback" not in err, err
    msgs = [m for _, m in got]
    assert msgs[0] == "READY=1" and msgs[-1] == "STOPPING=1", msgs[:3]
    pings = np.array([t for t, m in got if m == "WATCHDOG=1"])
    assert ((pings > lost) & (pings < back)).sum() >= 5  # a ping every 2.5 s through the 15-s loss
    assert np.diff(pings).max() < 5.0, np.diff(pings).max()  # never near WatchdogSec=10
