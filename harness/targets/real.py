"""``reader:NAME``: a real card in a real reader.

Exactly one reader must match NAME; its profile comes from ``readers/``, its card's from
``--pinloop-card-profile``. Its PINs come from the environment (named by the card profile:
``PINLOOP_PIN_JPKI_AUTH`` ...), never from a scenario. Every APDU to it passes the real-card
guard (:mod:`harness.safety.guard`).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from harness.cards.profile import CardProfile
from harness.errors import TransportError
from harness.safety.guard import RealCardGuard
from harness.targets.base import GuardedCard, Target, TargetError
from harness.targets.reader_profile import load_profiles, reader_pattern, select_profile


class RealReaderTarget(GuardedCard, Target):
    """A real card in a real reader: nothing but what the reader's profile gives."""

    def __init__(
        self,
        pattern: str,
        readers_dir: Path | None = None,
        *,
        card: CardProfile,
        guard: RealCardGuard | None = None,
        card_wait_s: float = 5.0,
    ) -> None:
        """``card``: the kind of card in the reader (its profile). ``guard``: the guard of this
        reader's earlier target in the session (set up again after a lab fault): what it learnt
        about the card (a stopped card, a refused PIN, a PIN whose value is lost) carries over.
        ``card_wait_s``: how long to wait for a card (a card or emulator coming back after a
        fault)."""
        from harness.transport.pcsc import PcscTransport, list_readers, wait_for_card

        readers = reader_pattern(pattern, "--pinloop-target reader:").matching(list_readers())
        if len(readers) != 1:
            raise TargetError(
                f"reader:{pattern} matches {len(readers)} readers "
                f"({', '.join(readers) or 'none'}); it must match exactly one"
            )
        self.name = readers[0]
        self.card_profile = card
        self.profile = select_profile(
            self.name, load_profiles(readers_dir) if readers_dir else load_profiles()
        )
        wait_for_card(self.name, card_wait_s)
        if guard is not None and guard.name == self.name:
            guard.attach(PcscTransport(self.name))
            guard.forget_counters()  # the card was out of sight: read every counter again
            self.guard = guard
            self.transport = guard
        else:
            self.transport = self._guard(PcscTransport(self.name))

    def path_threads(self) -> list[str]:
        """The local pcscd's threads (the reader's own time is not a thread's)."""
        from harness.transport.pcsc import daemon_threads

        return daemon_threads()

    def recover(self) -> None:
        """After a cut the card may have left the reader: wait for it, then connect anew."""
        from harness.transport.pcsc import PcscTransport, wait_for_card

        with contextlib.suppress(TransportError):
            self.transport.close()
        wait_for_card(self.name, 10.0)
        self.guard.attach(PcscTransport(self.name))

    def close(self) -> None:
        """What is still short (a scenario cut off by a lost connection) is put back first."""
        try:
            self.guard.finish()
        except Exception as exc:  # at the end of a session there is no test left to fail
            print(
                f"pinloop: {self.name}: what was spent could not be put back at close: {exc}",
                file=sys.stderr,
            )
        finally:
            self.transport.close()
