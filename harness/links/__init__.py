"""Links that attach the emulated card to a reader: vpcd framing over pyserial URLs."""

from harness.links.seriallink import LinkClosed, LinkTimeout, SerialLink
from harness.links.vicc import IDENTIFY, EmulatorServer, serve_in_thread

__all__ = [
    "IDENTIFY",
    "EmulatorServer",
    "LinkClosed",
    "LinkTimeout",
    "SerialLink",
    "serve_in_thread",
]
