"""``pinloop`` with every TCP connect followed by a stall (``python -m tests.slow_connect ARGS``).

An emulator process that the scheduler takes off the CPU right after its connection to vpcd
is up: vpcd's 400 ms presence poll accepts it and asks for the ATR in the meantime. Used by
``tests/test_pcsc_faults.py`` to hold open the window in which a link that discarded early
bytes lost vpcd's request.
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

from harness.cli import main

STALL_S = 1.0

_connect = socket.create_connection


def _connect_then_stall(*args: Any, **kwargs: Any) -> socket.socket:
    sock = _connect(*args, **kwargs)
    time.sleep(STALL_S)
    return sock


if __name__ == "__main__":
    socket.create_connection = _connect_then_stall
    sys.exit(main(sys.argv[1:]))
