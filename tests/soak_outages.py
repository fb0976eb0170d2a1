"""A long live run through a real audio server that dies and comes back (run on request, not by pytest):

    .venv/bin/python tests/soak_outages.py [--minutes 10] [--outages 2] [--out docs/soak-outages.txt]

A JACK dummy server (48 kHz, 256-sample periods) is the capture device; a JACK client plays the demo
clip into edgemir's input in a loop; ``edgemir run`` (all five shipped tasks, the live display in an
80x24 tmux terminal, JSON lines to a file) runs for the whole time. The server is stopped and
restarted ``--outages`` times. Checked and reported: the process stays up, each outage shows on the
display (banner) and in the gap counter, events resume within 1 s of each restart, and the JSON
lines file is valid from the first line to the last. Exit 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jack_errors import jackd_failed

ROOT = Path(__file__).resolve().parents[1]
SERVER = f"edgemirsoak{os.getpid()}"
SOCK = f"edgemir-soak-{os.getpid()}"  # a tmux server of its own
ENV = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1", JACK_DEFAULT_SERVER=SERVER, PYTHONPATH=str(ROOT))


def jackd() -> subprocess.Popen:
    err = tempfile.TemporaryFile()
    j = subprocess.Popen(["jackd", "-n", SERVER, "-d", "dummy", "-r", "48000", "-p", "256"], env=ENV,
                         stdout=subprocess.DEVNULL, stderr=err)
    subprocess.run(["jack_wait", "-w", "-t", "10"], env=ENV, capture_output=True)
    if j.poll() is not None:
        sys.exit(jackd_failed(err))
    return j


PLAYER = r"""
import sys, time, numpy as np, soundfile as sf, soxr, jack
x, sr = sf.read(sys.argv[1], dtype="float32", always_2d=True)
clip = soxr.resample(x.mean(axis=1), sr, 48000).astype(np.float32)
pos = [0]
client = jack.Client("soak-player", servername=sys.argv[2], no_start_server=True)
out = client.outports.register("out")

@client.set_process_callback
def process(frames):
    idx = (pos[0] + np.arange(frames)) % len(clip)
    out.get_array()[:] = clip[idx]
    pos[0] = (pos[0] + frames) % len(clip)

client.activate()
while True:  # keep edgemir's input ports fed by this clip (PortAudio wires system:capture in first)
    for tgt in client.get_ports(is_input=True, is_audio=True):
        if tgt.name.startswith("PortAudio"):
            conns = client.get_all_connections(tgt)
            if out.name not in [c.name for c in conns]:
                for c in conns:
                    client.disconnect(c, tgt)
                client.connect(out, tgt)
    time.sleep(0.2)
"""


def player() -> subprocess.Popen:
    """The demo clip played into edgemir's input in a loop, by a JACK client in its own process (stopped
    before each outage: a client of a server that dies can crash its process)."""
    return subprocess.Popen([sys.executable, "-c", PLAYER, str(ROOT / "edgemir" / "data" / "demo.wav"), SERVER],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def gaps(screen: str) -> float:
    """The gap counter on the display's status line."""
    m = re.search(r"gaps ([\d.]+) s", screen)
    return float(m.group(1)) if m else float("nan")


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--outages", type=int, default=2)
    ap.add_argument("--outage-s", type=float, default=8.0)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "soak-outages.txt")
    args = ap.parse_args()
    work = ROOT / "logs" / "soak-outages"
    work.mkdir(parents=True, exist_ok=True)
    jl = work / "events.jsonl"
    jl.unlink(missing_ok=True)
    sess = f"edgemir-soak-{os.getpid()}"
    report: list[str] = []
    ok = True

    def say(s: str) -> None:
        print(s, flush=True)
        report.append(s)

    def screen() -> str:
        return subprocess.run(["tmux", "-L", SOCK, "capture-pane", "-p", "-t", sess], capture_output=True, text=True).stdout

    j = jackd()
    play = player()
    exports = " ".join(f"{k}={ENV[k]}" for k in ("JACK_NO_AUDIO_RESERVATION", "JACK_DEFAULT_SERVER", "PYTHONPATH"))
    cmd = f"cd {ROOT} && {exports} {sys.executable} -m edgemir run --device system --jsonl {jl}; echo EXIT=$?; sleep 600"
    subprocess.run(["tmux", "-L", SOCK, "new-session", "-d", "-s", sess, "-x", "80", "-y", "24", cmd], check=True)
    t0 = time.time()
    total = args.minutes * 60
    at = [total * (k + 1) / (args.outages + 1) for k in range(args.outages)]
    say(f"# tests/soak_outages.py: {args.minutes:g} min of `edgemir run` (five tasks, live display) on a JACK dummy "
        f"server at 48 kHz / 256, {args.outages} outages of {args.outage_s:g} s, {time.strftime('%Y-%m-%d')}")
    try:
        for k, when in enumerate(at, 1):
            while time.time() - t0 < when:
                time.sleep(1)
                if "EXIT=" in screen():
                    raise RuntimeError("edgemir exited:\n" + screen())
            gaps_before = screen()
            play.terminate()
            play.wait(10)
            j.terminate()
            j.wait(10)
            lost = time.time()
            time.sleep(args.outage_s / 2)
            mid = screen()
            shown = "INPUT DEVICE LOST" in mid
            time.sleep(args.outage_s / 2)
            evs = [json.loads(x) for x in jl.read_text().splitlines()]
            t_lost = max(e["t"] for e in evs)
            back = time.time()  # the server process starts
            j = jackd()
            ready = time.time() - back  # it accepts clients
            play = player()
            resumed = float("inf")
            while time.time() - back < 20:  # the first event of audio captured after the restart
                tail = jl.read_text().splitlines()[len(evs):]
                if any(json.loads(x)["t"] > t_lost + args.outage_s - 1.5 for x in tail if x.endswith("}")):
                    resumed = time.time() - back
                    break
                time.sleep(0.02)
            time.sleep(3)
            after = screen()
            g0, g1 = gaps(gaps_before), gaps(after)
            good = shown and resumed - ready <= 1.0 and g1 - g0 >= args.outage_s - 1.0
            ok &= good
            say(f"outage {k} at {lost - t0:5.0f} s, server down {back - lost:.1f} s: banner shown {shown}, events "
                f"resumed {resumed - ready:.2f} s after the server was up ({resumed:.2f} s after its start), "
                f"gap counter {g0:.1f} -> {g1:.1f} s  {'OK' if good else 'FAIL'}")
            if k == 1:
                say("display during the outage:")
                report.extend("    " + line for line in mid.rstrip().splitlines())
        while time.time() - t0 < total:
            time.sleep(1)
            if "EXIT=" in screen():
                raise RuntimeError("edgemir exited:\n" + screen())
        final = screen()
        alive = "EXIT=" not in final
        say(f"after {args.minutes:g} min: process alive {alive}")
        say("display at the end:")
        report.extend("    " + line for line in final.rstrip().splitlines())
        ok &= alive
    finally:
        subprocess.run(["tmux", "-L", SOCK, "send-keys", "-t", sess, "C-c"], capture_output=True)
        time.sleep(3)
        end = screen()
        subprocess.run(["tmux", "-L", SOCK, "kill-session", "-t", sess], capture_output=True)
        play.terminate()
        j.terminate()
        j.wait(10)
    exit0 = "EXIT=0" in end
    valid = 0
    try:
        for line in jl.read_text().splitlines():
            json.loads(line)
            valid += 1
        jsonl_ok = jl.read_text().endswith("\n")
    except (ValueError, OSError) as e:
        jsonl_ok = False
        say(f"invalid JSON line after {valid} lines: {e}")
    ok &= exit0 and jsonl_ok
    say(f"Ctrl-C: exit 0 {exit0}; JSON lines valid from first to last: {jsonl_ok} ({valid} lines)")
    say(f"RESULT: {'PASS' if ok else 'FAIL'}")
    args.out.write_text("\n".join(report) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
