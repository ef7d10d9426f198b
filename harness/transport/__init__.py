"""Ways the harness reaches a card: in-process, PC/SC (pyscard), a direct vpcd link."""

from harness.transport.base import DEFAULT_DEADLINE, Transport, exchange
from harness.transport.inprocess import InProcessTransport

__all__ = ["DEFAULT_DEADLINE", "InProcessTransport", "Transport", "exchange"]
