"""Why a JACK dummy server did not start, in one line (shared by the device tests and the live scripts)."""

from __future__ import annotations

import glob
from typing import IO


def jackd_failed(err: IO[bytes]) -> str:
    """The reason from jackd's own stderr (the file it wrote to); a full server registry (stale /dev/shm/jack*
    entries left by a jackd that was killed without cleaning up) is named with the way out, as no clean machine
    shows it."""
    err.seek(0)
    stderr = err.read().decode(errors="replace")
    if "Too many servers" in stderr:
        stale = " ".join(sorted(glob.glob("/dev/shm/jack*"))) or "/dev/shm/jack*"
        return ("jackd did not start: JACK's server registry is full of stale entries (a jackd killed without "
                f"cleaning up); with no jackd running, remove {stale}")
    said = [line.strip() for line in stderr.splitlines() if line.strip()][-3:]
    return "jackd did not start" + (": " + " | ".join(said) if said else "")
