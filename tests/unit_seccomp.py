"""Run a command under the seccomp filter that systemd would build from a unit file.

    /usr/bin/python3 tests/unit_seccomp.py UNIT -- COMMAND [ARGS...]

The filter is derived the way systemd 252 derives it (src/core/load-fragment.c, exec-invoke):
the first ``SystemCallFilter=`` without ``~`` starts an allow list (plus ``@default``), later ``~``
lines remove syscalls from it; everything else gets ``SystemCallErrorNumber=`` (EPERM, ...) or,
when that is unset, kills the process. The syscall sets are read from ``systemd-analyze
syscall-filter``, so they are the installed systemd's. The filter is loaded with libseccomp's own
Python binding (Debian's python3-seccomp, hence the system python) and survives ``execv``.

Exit status: the command's; 70 when the filter cannot be built.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys


def unit_filter(unit_text: str) -> tuple[list[str], set[str], str | None]:
    """(filter lines in order, the resulting allow list, SystemCallErrorNumber or None)."""
    lines, err = [], None
    for raw in unit_text.splitlines():
        m = re.match(r"\s*SystemCallFilter=(.*)", raw)
        if m:
            lines.append(m.group(1).strip())
        m = re.match(r"\s*SystemCallErrorNumber=(.*)", raw)
        if m:
            err = m.group(1).strip() or None
    allow: set[str] | None = None
    for line in lines:
        deny = line.startswith("~")
        names = expand(line.lstrip("~").split())
        if allow is None:
            if deny:
                raise SystemExit("unit_seccomp: a deny-list-only filter is not handled here")
            allow = expand(["@default"]) | names
        elif deny:
            allow -= names
        else:
            allow |= names
    return lines, allow or set(), err


_SETS: dict[str, list[str]] = {}


def expand(names: list[str]) -> set[str]:
    out: set[str] = set()
    for n in names:
        if n.startswith("@"):
            if n not in _SETS:
                txt = subprocess.run(["systemd-analyze", "syscall-filter", n], capture_output=True, text=True,
                                     check=True).stdout
                _SETS[n] = [s.strip() for s in txt.splitlines()[1:] if s.strip() and not s.strip().startswith("#")]
            out |= expand(_SETS[n])
        else:
            out.add(n)
    return out


def main(argv: list[str]) -> int:
    import seccomp  # Debian's python3-seccomp (libseccomp's binding)

    if len(argv) < 4 or argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 64
    _, allow, err = unit_filter(open(argv[1]).read())
    if err is None or err == "kill":
        default = seccomp.KILL_PROCESS
    else:
        default = seccomp.ERRNO(getattr(errno, err) if not err.isdigit() else int(err))
    f = seccomp.SyscallFilter(defaction=default)
    for name in sorted(allow):
        try:
            f.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):
            pass  # not a syscall of this architecture (systemd skips those too)
    f.load()
    os.execvp(argv[3], argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
