"""``edgemir.toml``: the service's settings. CLI flags override it; a bad value is a one-line error
naming the key and the reason."""

from __future__ import annotations

import tomllib
from pathlib import Path

from edgemir.errors import UserError
from edgemir.labels import A4_RANGE, TASKS
from edgemir.tasks import REGISTRY

DEFAULT_PATH = Path("/etc/edgemir/edgemir.toml")

# key -> (type check, description)
RUN_KEYS = {
    "device": (lambda v: isinstance(v, (str, int)), "a device index or name"),
    "tasks": (lambda v: isinstance(v, list) and v and all(t in TASKS for t in v) and len(set(v)) == len(v),
              f"a list of distinct tasks from {TASKS}"),
    "models": (lambda v: isinstance(v, str), "a folder path"),
    "osc": (lambda v: isinstance(v, str) and ":" in v, "HOST:PORT"),
    "jsonl": (lambda v: isinstance(v, str), "a file path or -"),
    "threads": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "block": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 100, "an integer in 1..100"),
    "a4": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and A4_RANGE[0] <= v <= A4_RANGE[1],
           f"a frequency in {A4_RANGE[0]:g}..{A4_RANGE[1]:g} Hz"),
}
THRESHOLD_KEYS = {key: (check, what) for spec in REGISTRY.values()
                  for key, (_, _, check, what) in spec.config.items()}


def arg_type(key: str, convert=int):
    """An argparse ``type`` that checks a command-line value as the config file checks ``run.KEY``:
    a bad value is argparse's one-line error (exit 2), naming the option and the reason."""
    import argparse

    ok, what = RUN_KEYS[key]

    def parse(text: str):
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return v

    return parse


def positive_float(text: str) -> float:
    import argparse
    import math

    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return v


def load_config(path: Path | None) -> dict:
    """The validated config; {} when no path is given and the default file is absent."""
    if path is None:
        if not DEFAULT_PATH.exists():
            return {}
        path = DEFAULT_PATH
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: config not found") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read config ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: invalid TOML ({e})") from None
    for section in data:
        if section not in ("run", "thresholds"):
            raise UserError(f"{path}: unknown section [{section}] (expected [run] and [thresholds])")
    for section, keys in (("run", RUN_KEYS), ("thresholds", THRESHOLD_KEYS)):
        for k, v in data.get(section, {}).items():
            if k not in keys:
                raise UserError(f"{path}: unknown key {section}.{k}")
            ok, what = keys[k]
            if not ok(v):
                raise UserError(f"{path}: {section}.{k} must be {what}, got {v!r}")
    return data


def decoder_overrides(cfg: dict) -> dict:
    """[thresholds] keys -> per-task decoder arguments (each task's spec names its keys)."""
    th = cfg.get("thresholds", {})
    out: dict[str, dict] = {}
    for name, spec in REGISTRY.items():
        for key, (arg, convert, _, _) in spec.config.items():
            if key in th:
                out.setdefault(name, {})[arg] = convert(th[key])
    return out
