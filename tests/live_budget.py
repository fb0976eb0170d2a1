"""The live budget, measured as a user runs it (run on request, not by pytest):

    .venv/bin/python tests/live_budget.py [--minutes 10] [--models DIR] [--block 4] [--out docs/bench-live.json]

A JACK dummy server (48 kHz, 256-sample periods) is the capture device; a JACK client plays a clip (the demo
by default) into edgemir's input in a loop; ``edgemir run --no-display`` runs all five tasks for the whole
time and writes JSON lines. Reported, after the first ``--warmup`` seconds: CPU of the edgemir processes
(the worker and its capture child) per second of audio, peak RSS (the worker's; summed with its children;
and the proportional set size of all, which splits shared pages such as JACK's shared memory among the
processes that map them: lower when other Python processes share torch's libraries), audio-to-event latency
per task (p50, p99, from each event's ``latency_ms``), xruns and clock gaps (from edgemir's own summary).
edgemir's stderr is kept in a log file, and the worker's child processes are listed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from soak_outages import ENV, PLAYER, jackd  # noqa: E402  (the same JACK server and player as the outage soak)


def tree(pid: int) -> list[int]:
    """The process and its descendants, found by their parent ids in /proc (the per-thread ``children`` files
    can miss a child: the kernel documents them as reliable only when the process is stopped; a capture process
    missed that way once made edgemir's own figure look like all of the CPU)."""
    parent: dict[int, int] = {}
    for st in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(st.parent.name)] = int(st.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += [c for c, pp in parent.items() if pp == p]
    return out


def cpu_rss(pids: list[int]) -> tuple[float, float]:
    """(CPU seconds, summed VmHWM in MB) of the processes."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu = hwm = 0.0
    for p in pids:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(f[11]) + int(f[12])) / tick
            m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text())
            hwm += int(m.group(1)) / 1024 if m else 0
        except (OSError, IndexError):
            pass
    return cpu, hwm


def pss_mb(pids: list[int]) -> float:
    """Summed proportional set size (shared pages divided among their users, e.g. JACK's shared memory that the
    capture process maps) in MB: what the processes together take, unlike a sum of RSS."""
    total = 0.0
    for p in pids:
        try:
            m = re.search(r"^Pss:\s+(\d+) kB", Path(f"/proc/{p}/smaps_rollup").read_text(), re.M)
            total += int(m.group(1)) / 1024 if m else 0
        except OSError:
            pass
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds left out of every figure")
    ap.add_argument("--models", type=Path)
    ap.add_argument("--block", type=int, default=4)
    ap.add_argument("--clip", type=Path, default=ROOT / "edgemir" / "data" / "demo.wav")
    ap.add_argument("--tasks", default="pitch,onset,chord,drums,instrument")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    server = ENV["JACK_DEFAULT_SERVER"]
    seconds = a.minutes * 60
    j = jackd()
    pl = subprocess.Popen([sys.executable, "-c", PLAYER, str(a.clip), server], env=ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jsonl = Path(f"/tmp/edgemir-budget-{os.getpid()}.jsonl")
    cmd = [sys.executable, "-m", "edgemir", "run", "--no-display", "--jsonl", str(jsonl), "--tasks", a.tasks,
           "--duration", str(seconds), "--block", str(a.block)] + (["--models", str(a.models)] if a.models else [])
    t0 = time.perf_counter()
    log = Path(f"/tmp/edgemir-budget-{os.getpid()}.log")  # edgemir's stderr, kept: what the run itself said
    with log.open("w") as err_f:
        p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=err_f, text=True)
    samples = []  # (wall, cpu, rss) of the edgemir processes, the worker's own rss and cpu
    children: dict[int, tuple[float, float]] = {}  # capture process pid -> (first seen, last seen) wall time
    while p.poll() is None:
        time.sleep(1.0)
        now, pids = time.perf_counter() - t0, tree(p.pid)
        for c in pids[1:]:
            children[c] = (children.get(c, (now, now))[0], now)
        samples.append((now, *cpu_rss(pids), *cpu_rss([p.pid])[::-1], frozenset(pids), pss_mb(pids)))
    err = log.read_text()
    pl.kill()
    j.terminate()
    j.wait()
    if p.returncode != 0:
        print(err, file=sys.stderr)
        return 1
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    jsonl.unlink()
    first = min(e["t"] for e in events) if events else 0.0
    m = re.search(r"xruns (\d+), gaps ([\d.]+) s", err)
    # audio started when the first event's audio time was reached: steady state is after the warm-up
    start_wall = next((s[0] for s in samples if s[0] > samples[0][0] + a.warmup), samples[0][0])
    w0 = min(samples, key=lambda s: abs(s[0] - start_wall))
    # the last sample with every process of w0 still there (a capture process stopped at the end would take its
    # CPU time out of the sum)
    w1 = next((s for s in reversed(samples) if w0[5] <= s[5]), samples[-1])
    cpu_pct = 100 * (w1[1] - w0[1]) / max(w1[0] - w0[0], 1e-9)
    worker_pct = 100 * (w1[4] - w0[4]) / max(w1[0] - w0[0], 1e-9)
    report = {"machine": platform.machine(), "python": platform.python_version(), "minutes": a.minutes,
              "block": a.block, "models": str(a.models or "shipped"), "clip": a.clip.name,
              "cpu_percent_of_one_core": round(cpu_pct, 2), "cpu_percent_worker": round(worker_pct, 2),
              "peak_rss_mb": round(max(s[2] for s in samples), 1),
              "peak_rss_worker_mb": round(max(s[3] for s in samples), 1),
              "peak_pss_all_mb": round(max(s[6] for s in samples), 1),
              # the worker's peak RSS so far, every 30 s of wall time (when it rose)
              "peak_rss_worker_series": [(round(s[0]), round(s[3], 1)) for s in samples[::30]],
              "xruns": int(m.group(1)) if m else None, "gaps_s": float(m.group(2)) if m else None,
              "summary": err.strip().splitlines()[-1] if err.strip() else "",
              # each child process of the worker (the capture process; more than one = it was restarted)
              "child_processes": [{"pid": c, "seen_s": [round(a), round(b)]} for c, (a, b) in children.items()],
              "stderr_log": str(log), "tasks": {}}
    for task in a.tasks.split(","):
        lat = np.array([e["latency_ms"] for e in events if e["task"] == task and e["t"] >= first + a.warmup
                        and e.get("latency_ms") is not None])
        report["tasks"][task] = {"events": int(len(lat)), "latency_p50_ms": round(float(np.percentile(lat, 50)), 1)
                                 if len(lat) else None,
                                 "latency_p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None}
    print(f"{a.minutes:g} min live, JACK dummy 48 kHz/256, block {a.block}: CPU {cpu_pct:.1f}% of one core "
          f"(worker {worker_pct:.1f}%, capture process {cpu_pct - worker_pct:.1f}%), "
          f"peak RSS {report['peak_rss_worker_mb']:.0f} MB (summed with the capture process {report['peak_rss_mb']:.0f}, "
          f"proportional set size of all {report['peak_pss_all_mb']:.0f}), "
          f"xruns {report['xruns']}, gaps {report['gaps_s']} s, child processes {len(children)}; edgemir's log: {log}")
    for task, r in report["tasks"].items():
        print(f"  {task:<11} {r['events']:>6} events  latency p50 {r['latency_p50_ms']} ms  p99 {r['latency_p99_ms']} ms")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
