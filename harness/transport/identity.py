"""Is the card in this virtual reader the emulator this run started?"""

from __future__ import annotations

from collections.abc import Callable

from harness.apdu.model import ResponseAPDU
from harness.errors import StaleEmulator
from harness.links.vicc import IDENTIFY
from harness.timing import ApduTime, timed_transmit
from harness.transport.base import Transport


def emulator_instance(
    transport: Transport, record: Callable[[ApduTime], object] | None = None
) -> bytes | None:
    """The instance id of the pinloop emulator behind ``transport``, or ``None`` if it is not
    one (a real card answers the identification APDU with an error status word). ``record``:
    where the APDU's row goes (kind ``identify``)."""
    resp: ResponseAPDU = (
        transport.transmit(IDENTIFY)
        if record is None
        else timed_transmit(transport, IDENTIFY, "identify", record)
    )
    return resp.data if resp.ok and len(resp.data) == 16 else None


def require_emulator(
    transport: Transport,
    instance_id: bytes,
    record: Callable[[ApduTime], object] | None = None,
) -> None:
    """Raise :class:`StaleEmulator` unless ``transport`` reaches exactly that emulator."""
    found = emulator_instance(transport, record)
    if found != instance_id:
        what = "no pinloop emulator" if found is None else f"emulator instance {found.hex()}"
        raise StaleEmulator(
            f"{transport.name}: expected emulator instance {instance_id.hex()}, found {what} "
            "(a stale emulator left on this port?)"
        )
