"""systemd notifications (sd_notify protocol, no dependency): READY=1 once audio flows,
WATCHDOG=1 from the worker loop, STOPPING=1 at the end. A no-op without NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, interval_s: float | None = None) -> None:
        addr = os.environ.get("NOTIFY_SOCKET")
        self.sock = None
        self.addr = None
        if addr:
            if addr.startswith("@"):
                addr = "\0" + addr[1:]
            self.addr = addr
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        usec = os.environ.get("WATCHDOG_USEC")
        # a quarter of WatchdogSec: a ping still lands in time when a device re-open blocks for a few seconds
        self.interval = interval_s if interval_s is not None else (int(usec) / 4e6 if usec else 1.0)
        self.last = 0.0
        self.is_ready = False

    def send(self, msg: str) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto(msg.encode(), self.addr)
        except OSError:
            pass

    def ready(self) -> None:
        self.is_ready = True
        self.send("READY=1")

    def ping(self) -> None:
        """Called from the worker loop on every pass (a processed block, or a wait for audio while the
        device is away): a worker stuck in a model stops pinging."""
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")
