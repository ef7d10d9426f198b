"""Serve an emulated card on a vpcd link (the role vsmartcard calls the *vicc*).

The server answers every ``get ATR`` (powered or not: pcscd polls presence with it every
400 ms and a missing answer blocks the reader), powers the card on, off and resets it on the
control codes, and passes APDUs to the card. It never sends an empty answer.

**Identification.** A stale emulator left on the same port silently becomes the card when the
current one leaves. So each server has a random *instance id*, and answers the pinloop test
APDU :data:`IDENTIFY` with it - before the card OS sees the APDU, so the emulated card itself
stays faithful (the real card answers ``6D 00``). The harness compares the id with the one of
the emulator it started.

The server reconnects when the link closes (pcscd restarted, probe re-plugged) until stopped.
A power cut injected at a write point closes the link: to the reader the card was removed.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from harness.apdu.model import CommandAPDU
from harness.errors import CardNotPowered, CardPowerLost
from harness.links.seriallink import LinkClosed, SerialLink
from harness.links.vpcd import CONTROL_NAMES, CTRL_ATR, CTRL_OFF, CTRL_ON, CTRL_RESET

if TYPE_CHECKING:
    from harness.cards.emulated import CardEmulator

#: pinloop's identification APDU (CLA 80, INS EE, P1 P2 = "PL"): answered by the server only
IDENTIFY = CommandAPDU(0x80, 0xEE, 0x50, 0x4C, le=16)
IDENTIFY_BYTES = IDENTIFY.to_bytes()

_NO_DIAGNOSIS = b"\x6f\x00"

log = logging.getLogger(__name__)


class EmulatorServer:
    """One emulated card on one link URL."""

    def __init__(
        self,
        card: CardEmulator,
        url: str,
        *,
        instance_id: bytes | None = None,
        reconnect: bool = True,
        retry_interval: float = 0.05,
        removal_time: float = 0.5,
        quickack: bool = True,
    ) -> None:
        self.card = card
        self.url = url
        self.instance_id = instance_id or os.urandom(16)
        self.reconnect = reconnect
        self.retry_interval = retry_interval
        #: how long the card stays out after the emulator removed it (power cut, drop): more
        #: than pcscd's 400 ms presence poll, or vpcd never sees it leave and come back
        self.removal_time = removal_time
        self._removed = False
        self.quickack = quickack
        self.connected = threading.Event()
        self.stopped = threading.Event()
        #: cleared while the card's supply is cut (a relay): it stays out of the reader
        self.powered = threading.Event()
        self.powered.set()
        self.apdus = 0
        self._link: SerialLink | None = None
        self._log = logging.getLogger(f"{__name__}({card.label}@{url})")

    # -- life cycle -------------------------------------------------------------------------
    def serve_forever(self) -> None:
        """Connect, serve, reconnect after the link closes, until :meth:`stop`."""
        while not self.stopped.is_set():
            if not self.powered.wait(self.retry_interval):
                continue
            try:
                link = SerialLink.open(self.url, quickack=self.quickack)
            except LinkClosed:
                self.stopped.wait(self.retry_interval)
                continue
            try:
                self._serve(link)
            except Exception:  # never let one session's bug take the card away for good
                self._log.exception("session ended by an unexpected error; reconnecting")
                self._removed = True
            if not self.reconnect:
                break
            away, self._removed = (
                self.removal_time if self._removed else self.retry_interval,
                False,
            )
            self.stopped.wait(away)

    def attach(self, link: SerialLink) -> None:
        """Serve an already open link (one session, no reconnect); for tests and probes."""
        self._serve(link)

    def stop(self) -> None:
        """Stop serving; the card leaves the reader (its link is closed)."""
        self.stopped.set()
        link = self._link
        if link is not None:
            link.close()

    def drop(self) -> None:
        """Close the current link as if the card were pulled out; reconnects if enabled."""
        link = self._link
        if link is not None:
            self._removed = True
            link.close()

    def power(self, on: bool) -> None:
        """The card's supply: off pulls the card out of the reader until it comes back on."""
        if on:
            self.powered.set()
        else:
            self.powered.clear()
            self.drop()

    def _serve(self, link: SerialLink) -> None:
        self._link = link
        self.connected.set()
        self._log.info("connected; instance %s", self.instance_id.hex())
        try:
            for message in link.messages(stop=self.stopped.is_set):
                answer = self.handle(message)
                if answer is not None:
                    link.send(answer)
        except LinkClosed as exc:
            self._log.info("link closed: %s", exc)
        except CardPowerLost as exc:
            self._log.info("%s: the card leaves the reader", exc)
            self._removed = True
        finally:
            self.connected.clear()
            self._link = None
            self.card.power_off()
            link.close()

    # -- one message -------------------------------------------------------------------------
    def handle(self, message: bytes) -> bytes | None:
        """The answer to one vpcd message (``None`` for control codes that take none)."""
        if len(message) == 1:
            code = message[0]
            if code == CTRL_ATR:
                return self.card.atr
            if code == CTRL_ON:
                self.card.power_on()
            elif code == CTRL_OFF:
                self.card.power_off()
            elif code == CTRL_RESET:
                self.card.reset()
            else:
                self._log.warning("unknown control code %02X", code)
            self._log.debug("%s", CONTROL_NAMES.get(code, f"control {code:02X}"))
            return None
        self.apdus += 1
        if message == IDENTIFY_BYTES:
            return self.instance_id + b"\x90\x00"
        try:
            return self.card.transmit(message)
        except CardNotPowered:
            self._log.warning("APDU while the card is unpowered")
            return _NO_DIAGNOSIS
        except CardPowerLost:
            raise
        except Exception:  # never let a card bug kill the server or hang the reader
            self._log.exception("card raised while processing an APDU")
            return _NO_DIAGNOSIS


def wait_connected(server: EmulatorServer, timeout: float) -> bool:
    """Whether the server's link came up within ``timeout`` seconds."""
    return server.connected.wait(timeout)


def serve_in_thread(server: EmulatorServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name=f"vicc {server.url}", daemon=True)
    thread.start()
    return thread
