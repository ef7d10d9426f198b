"""The tear step's own behaviour beyond the library: a fault that is not its cut."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.apdu.model import CommandAPDU, ResponseAPDU
from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import load_card_config, parse_profile
from harness.errors import CardRemoved
from harness.run.runner import Runner
from harness.scenario import load_scenarios
from harness.targets import InProcessTarget

LIB = Path(__file__).resolve().parent.parent / "scenarios"


def test_a_transport_fault_that_is_not_the_cut_is_a_lab_fault() -> None:
    """Had the link failed before the card reached the write point to cut, the sweep must not
    take it for its own cut (and must not crash looking for the point it never reached)."""
    target = InProcessTarget(load_card_config(), parse_profile("faithful"))
    real = target.transport.transmit
    swept: list[CommandAPDU] = []

    def flaky(cmd: CommandAPDU) -> ResponseAPDU:
        if target.card.write_hook is not None:  # the command the sweep is cutting
            swept.append(cmd)
            if len(swept) == 2:  # the first cut run (the first one learns the points)
                raise CardRemoved("the reader lost the card")
        return real(cmd)

    target.transport.transmit = flaky  # type: ignore[method-assign]
    scenario = load_scenarios(LIB / "tearing-verify.pin.yaml", JPKI)[0]
    with pytest.raises(CardRemoved, match="lost the card"):
        Runner(target, scenario).run()
    assert len(swept) == 2
