"""Is the card in this virtual reader the emulator this run started?"""

from __future__ import annotations

from harness.apdu.model import ResponseAPDU
from harness.errors import StaleEmulator
from harness.links.vicc import IDENTIFY
from harness.transport.base import Transport


def emulator_instance(transport: Transport) -> bytes | None:
    """The instance id of the pinloop emulator behind ``transport``, or ``None`` if it is not
    one (a real card answers the identification APDU with an error status word)."""
    resp: ResponseAPDU = transport.transmit(IDENTIFY)
    return resp.data if resp.ok and len(resp.data) == 16 else None


def require_emulator(transport: Transport, instance_id: bytes) -> None:
    """Raise :class:`StaleEmulator` unless ``transport`` reaches exactly that emulator."""
    found = emulator_instance(transport)
    if found != instance_id:
        what = "no pinloop emulator" if found is None else f"emulator instance {found.hex()}"
        raise StaleEmulator(
            f"{transport.name}: expected emulator instance {instance_id.hex()}, found {what} "
            "(a stale emulator left on this port?)"
        )
