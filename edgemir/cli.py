"""``edgemir``: run (live), analyze (files), info (bundle cards), devices, bench."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from pathlib import Path

from edgemir import __version__
from edgemir.config import arg_type, positive_float
from edgemir.errors import UserError


class Terminated(BaseException):
    """SIGTERM during ``analyze`` or ``bench``: unwinds like Ctrl-C, so outputs are cleaned up."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, as every other bad input (argparse prints the usage too)
        self.exit(2, f"error: {self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="edgemir", description="ultra-light deep music analysis")
    p.add_argument("--version", action="version", version=f"edgemir {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)

    r = sub.add_parser("run", help="live analysis from an input device (or a file)")
    r.add_argument("--device", help="input device index or name (see 'edgemir devices')")
    r.add_argument("--tasks", help="comma-separated: pitch,onset,chord,drums,instrument")
    r.add_argument("--models", type=Path, help="folder of bundles (before the shipped ones)")
    r.add_argument("--file", type=Path, help="analyse this file instead of a device")
    r.add_argument("--realtime", action="store_true", help="pace --file in real time")
    r.add_argument("--wait-device", action="store_true",
                   help="wait for a missing input device instead of playing the demo (the service's mode)")
    r.add_argument("--jsonl", help="write events as JSON lines to PATH, or - for stdout")
    r.add_argument("--osc", help="send events as OSC to HOST:PORT")
    r.add_argument("--no-display", action="store_true", help="no live display (services, pipes)")
    r.add_argument("--duration", type=positive_float, help="stop after S seconds of audio")
    r.add_argument("--block", type=arg_type("block"),
                   help="hops per chord and instrument run (default 4; onset and drums run every hop, pitch every 2)")
    r.add_argument("--threads", type=arg_type("threads"), help="torch threads (default 1)")
    r.add_argument("--a4", type=arg_type("a4", float), help="the tuner's reference pitch in Hz (default 440)")
    r.add_argument("--config", type=Path, help="TOML config (default /etc/edgemir/edgemir.toml if present)")

    a = sub.add_parser("analyze", help="offline analysis of files through the same engine")
    a.add_argument("files", nargs="+", type=Path)
    a.add_argument("--tasks")
    a.add_argument("--models", type=Path)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--threads", type=arg_type("threads"), default=1)

    i = sub.add_parser("info", help="print a bundle's card")
    i.add_argument("bundle", type=Path, nargs="?")
    i.add_argument("--json", action="store_true")

    sub.add_parser("devices", help="list input devices")

    b = sub.add_parser("bench", help="latency, cost and accuracy of bundles side by side")
    b.add_argument("bundles", nargs="*", type=Path)
    b.add_argument("--tasks")
    b.add_argument("--threads", type=arg_type("threads"), default=1)
    b.add_argument("--seconds", type=positive_float, default=10.0)
    b.add_argument("--json", type=Path)
    b.add_argument("--plot", type=Path)
    b.add_argument("--wide", action="store_true", help="every column (tables fit 80 columns without it)")
    b.add_argument("--soak", type=positive_float, metavar="MINUTES",
                   help="instead: analyze a MINUTES-long file with the tasks; wall time, RTF, RSS growth")
    b.add_argument("--soak-clip", type=Path, help="audio tiled into the soak file (default: the demo clip)")
    return p


def card_summary(path: Path, card: dict) -> list[str]:
    """A bundle card in a few lines a person reads (``info --json`` gives the raw card)."""
    from edgemir.frontend import Framing
    from edgemir.labels import FRAME_RATE, HOP, PITCH_BINS, PITCH_CENTS_PER_BIN, PITCH_FMIN, SAMPLE_RATE, note_name
    from edgemir.tasks import REGISTRY

    def fmt(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    task = card.get("task", "?")
    lines = [f"{path.name}: {task} model, format {card.get('format_version')}",
             f"  size        {card.get('params', 0):,} parameters, {card.get('fraction_removed', 0):.1%} removed "
             f"(dense {card.get('dense_params', card.get('params', 0)):,}), {card.get('bytes', 0) / 1024:.0f} KB, "
             f"{card.get('flops_per_second', 0) / 1e6:.1f} MFLOP/s"]
    lat = card.get("latency_ms_per_hop") or {}
    la = int(card.get("lookahead", 0))
    try:
        fr = Framing.from_card(card.get("frontend"))
        reach = fr.ms_past
        win = fr.n_fft * 1000 // SAMPLE_RATE
        lines.append(f"  timing      sees {reach + la * 1000 / FRAME_RATE:.0f} ms past each frame ({win} ms window "
                     f"reaching {reach:.0f} ms past its frame, look-ahead {la:+d})")
    except ValueError as e:
        lines.append(f"  timing      {e}")
    lines.append(f"              context {card.get('receptive_field')} frames of {HOP * 1000 // SAMPLE_RATE} ms"
                 + (f", {lat['p50']:.2f} ms/hop at export" if "p50" in lat else ""))
    if task in REGISTRY and REGISTRY[task].format == "f0":
        import math

        bins = int((card.get("architecture") or {}).get("n_out", PITCH_BINS + 1)) - 1  # older bundles: 360
        top = PITCH_FMIN * 2 ** ((bins - 1) * PITCH_CENTS_PER_BIN / 1200)
        lines.append(f"  range       {PITCH_FMIN:.1f}-{top:.0f} Hz ({note_name(24)}-"
                     f"{note_name(24 + 12 * math.log2(top / PITCH_FMIN))}), {PITCH_CENTS_PER_BIN:g}-cent bins")
    else:
        labels = card.get("labels", [])
        more = f" … ({len(labels)})" if len(labels) > 12 else ""
        lines.append(f"  labels      {', '.join(map(str, labels[:12]))}{more}")
    for split, sc in (card.get("scores") or {}).items():
        if isinstance(sc, dict):
            shown = ", ".join(f"{k} {fmt(v)}" for k, v in sc.items() if k != "items" and isinstance(v, (int, float)))[:110]
            lines.append(f"  {split:<11} {shown}" + (f" ({sc['items']} items)" if "items" in sc else ""))
    if card.get("decoder"):
        lines.append(f"  decoder     {json.dumps(card['decoder'])}")
    train = (card.get("training_data") or {}).get("train")
    if train:  # (cards written before December 2026 do not say)
        lines.append(f"  trained on  generator {train.get('generator_version')}, {train.get('minutes')} min, "
                     f"{len(train.get('soundfonts') or [])} SoundFonts and kits")
    return lines


def cmd_info(args) -> int:
    from edgemir.app import load_models
    from edgemir.bundle import load_bundle
    from edgemir.labels import TASKS

    if args.bundle is None:  # installed models
        print(f"edgemir {__version__}")
        bundles = load_models(list(TASKS), None, required=False)
        if not bundles:
            print("no models installed")
        for t, b in bundles.items():
            c = b.card
            print(f"{t:<11} {b.path.name:<32} {c['params']:>8} params  {c.get('fraction_removed', 0):.0%} removed")
        return 0
    b = load_bundle(args.bundle)
    if args.json:
        print(json.dumps(b.card, indent=1))
        return 0
    print("\n".join(card_summary(b.path, b.card)))
    return 0


def cmd_devices(args) -> int:
    try:
        import sounddevice as sd

        devs = sd.query_devices()
    except Exception as e:
        raise UserError(f"audio system unavailable: {str(e).splitlines()[0]}") from None
    n = 0
    for i, d in enumerate(devs):
        if d["max_input_channels"] > 0:
            print(f"{i:>3}  {d['name']:<40} {d['max_input_channels']} ch  {int(d['default_samplerate'])} Hz")
            n += 1
    if not n:
        print("no input devices")
    return 0


def cmd_analyze(args) -> int:
    from edgemir.app import analyze_file, load_models, parse_tasks, set_threads

    set_threads(args.threads)
    tasks = parse_tasks(args.tasks)
    stems: dict[str, list[str]] = {}
    for f in args.files:
        stems.setdefault(Path(f).stem, []).append(str(f))
    clash = {k: v for k, v in stems.items() if len(v) > 1}
    if clash:
        name, files = next(iter(clash.items()))
        raise UserError(f"{' and '.join(files)} would write the same outputs ({name}.*) in {args.out}; "
                        "analyse them in separate runs or rename one")
    bundles = load_models(tasks, args.models)
    failed = 0
    for f in args.files:
        try:
            res = analyze_file(f, bundles, args.out)
            print(json.dumps({k: res[k] for k in ("file", "duration", "events")}))
            if res["peak"] > 1.0:
                print(f"warning: {f} peaks at {res['peak']:.2f}, {20 * math.log10(res['peak']):.1f} dB over full scale "
                      f"({res['clipped']} samples): results may be unreliable; normalise the file", file=sys.stderr)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def _open_source(args, log):
    from edgemir.audio_io import DEMO
    from edgemir.sources import FileSource, LiveInput

    if args.file:
        return FileSource(args.file, realtime=args.realtime), False
    dev = args.device
    if isinstance(dev, str) and dev.isdigit():
        dev = int(dev)
    try:
        return LiveInput(dev, log=log, wait=args.wait_device), False
    except UserError as e:
        if args.device is not None:
            raise
        if not DEMO.exists():
            raise UserError(f"{e}; and no demo clip is installed") from None
        log(f"no input device ({getattr(e, 'reason', e)}): playing the demo clip in a loop, Ctrl-C stops")
        return FileSource(DEMO, realtime=True, loop=True), True


def _apply_config(args) -> dict:
    """Config values fill in what the command line did not set."""
    from edgemir.config import load_config

    cfg = load_config(args.config)
    run = cfg.get("run", {})
    for key in ("device", "models", "osc", "jsonl"):
        if getattr(args, key) is None and key in run:
            setattr(args, key, Path(run[key]) if key == "models" else str(run[key]))
    if args.tasks is None and "tasks" in run:
        args.tasks = ",".join(run["tasks"])
    if args.threads is None:
        args.threads = run.get("threads", 1)
    if args.block is None:
        args.block = run.get("block", 4)
    if args.a4 is None:
        args.a4 = float(run.get("a4", 440.0))
    return cfg


def cmd_run(args) -> int:
    from rich.console import Console

    from edgemir.display import Dashboard

    err = Console(stderr=True, soft_wrap=not sys.stderr.isatty())  # journald: one event, one line
    cfg = _apply_config(args)
    show = not args.no_display and args.jsonl != "-"
    dash = Dashboard(f"edgemir {__version__}", [], a4=args.a4)
    live = redraw = None
    state: dict = {"runner": None}
    if show:  # up at once (before torch is imported), redrawn by its own thread, off the audio path
        from rich.live import Live

        from edgemir.display import Redraw

        def frame():
            return dash.render(state["runner"].status() if state["runner"] else None)

        live = Live(frame(), console=Console(), auto_refresh=False, transient=False, redirect_stderr=False)
        live.start(refresh=True)
        redraw = Redraw(live, frame)
        redraw.start()
    log = dash.log if show else (lambda m: err.print(m, style="yellow"))
    try:
        return _run(args, cfg, dash, live, redraw, state, log, err)
    finally:
        if redraw is not None:
            redraw.stop()
        if live is not None:
            live.stop()


def _run(args, cfg: dict, dash, live, redraw, state: dict, log, err) -> int:
    from edgemir.app import Pipeline, build_engine, load_models, parse_tasks, set_threads
    from edgemir.config import decoder_overrides
    from edgemir.notify import Notifier
    from edgemir.sinks import JsonlSink, OscSink

    dash.stage = "loading models"
    set_threads(args.threads)
    tasks = parse_tasks(args.tasks)
    bundles = load_models(tasks, args.models)
    tasks = [t for t in tasks if t in bundles]
    dash.tasks = tasks
    engine = build_engine(bundles, block=args.block, decoder_overrides=decoder_overrides(cfg))
    sinks = []
    if args.jsonl:
        sinks.append(JsonlSink(args.jsonl))
    if args.osc:
        sinks.append(OscSink(args.osc))
    dash.stage = "opening the input device"
    source, demo = _open_source(args, log)
    def title() -> str:
        return ("DEMO — " if demo else "") + f"edgemir {__version__} — {source.name}"

    dash.title = title()
    notify = Notifier()
    runner = Pipeline(source, engine, sinks, on_events=dash.update, notify=notify)
    stop = {"flag": False}

    def _stop(*_):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    if hasattr(signal, "SIGHUP"):  # the terminal went away: stop, and free the device, rather than run on unseen
        signal.signal(signal.SIGHUP, _stop)
    source.start()
    notify.ready()
    state["runner"] = runner
    if live is None:
        err.print(f"edgemir {__version__}: {source.name}; tasks {','.join(tasks)}", style="dim")
    name = source.name
    try:
        while not stop["flag"] and runner.step():
            if args.duration and runner.state.audio_s >= args.duration:
                break
            if source.name != name:  # a device opened or re-opened
                name = source.name
                dash.title = title()
    except KeyboardInterrupt:
        pass
    finally:
        source.stop()
        for s in sinks:
            s.close()
        notify.stopping()
    if live is not None:
        redraw.stop()  # joined: nothing draws while the process winds down
        live.update(dash.render(runner.status()), refresh=True)
        live.stop()
        live.console.print()  # end the display's last line before the summary
    st = runner.status()
    lat = ("no events" if st["latency_p50_ms"] != st["latency_p50_ms"] else
           f"latency p50 {st['latency_p50_ms']:.0f} ms, p99 {st['latency_p99_ms']:.0f} ms")
    extra = "".join(f", {k} {st[k]}" for k in ("clipped", "nonfinite") if st[k])
    comp = ("no blocks run" if st["compute_p50_ms"] != st["compute_p50_ms"] else
            f"block compute p50 {st['compute_p50_ms']:.2f} ms, p99 {st['compute_p99_ms']:.2f} ms")
    err.print(f"processed {st['audio_s']:.1f} s: {comp}, xruns {st['xruns']}, gaps {st['gap_s']:.2f} s, {lat}{extra}",
              style="dim")
    return 0


def bound_heap(mmap_threshold: int = 4 << 20, trim_threshold: int = 16 << 20) -> bool:
    """Fix glibc's mmap and trim thresholds (no-op outside glibc).

    Left dynamic, glibc raises the mmap threshold each time a large mapped block is freed; larger and larger
    buffers then come from the heap and fragment it (an hour of ``analyze`` in 10-s passes grew 81 MB by
    trend). Fixed at 128 KB, every activation over it was an mmap and its page faults (1.6-1.8x the CPU).
    At 4 MB the engine's buffers (passes of at most 1 s: a few hundred KB, the pitch stack about 1 MB) come
    from the heap and are reused, anything larger goes back to the OS when freed, and the heap is trimmed
    only past 16 MB free: an hour of ``analyze`` with five tasks grows 6 MB by trend, at the CPU cost of
    leaving it dynamic (docs/streaming.md)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, mmap_threshold)) and bool(libc.mallopt(m_trim_threshold, trim_threshold))
    except (OSError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    import faulthandler

    bound_heap()

    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 PID` dumps every thread's stack (debugging a stuck service)
        try:
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        except (ValueError, OSError, AttributeError):  # stderr is not a file (embedded, captured)
            pass
    args = build_parser().parse_args(argv)

    def _terminate(*_):
        raise Terminated

    if args.cmd != "run":  # run stops gracefully on SIGTERM (its own handler)
        signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.cmd == "info":
            return cmd_info(args)
        if args.cmd == "devices":
            return cmd_devices(args)
        if args.cmd == "analyze":
            return cmd_analyze(args)
        if args.cmd == "run":
            return cmd_run(args)
        if args.cmd == "bench":
            from edgemir.bench import cmd_bench

            return cmd_bench(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    return 0


if __name__ == "__main__":
    sys.exit(main())
