"""The software-emulated My Number card.

- the card it implements: :mod:`harness.cards.jpki` (the profile and its layout)
- :mod:`~harness.emulator.card`         the card OS (:class:`EmulatedCard`) and its write points
- :mod:`~harness.emulator.state`        NVM and the stores that persist it
- :mod:`~harness.emulator.config`       a card's YAML config (PINs, reset codes, model, identity)
- :mod:`~harness.emulator.personalise`  a new card's keys, certificates and EF contents
- :mod:`~harness.emulator.keys`         RSA-2048 keys, certificates, raw PKCS#1 v1.5 signing
- :mod:`~harness.emulator.models`       card models (ATR, interface, extended length)
- :mod:`~harness.emulator.defects`      deliberate defects, off by default
"""

from harness.emulator.card import COMPARE_EVENT, FAITHFUL, WRITE_POINTS, EmulatedCard
from harness.emulator.config import CardConfig, load_card_config
from harness.emulator.defects import PROFILES, DefectProfile, parse_profile
from harness.emulator.personalise import personalise
from harness.emulator.state import CardState, FileStore, MemoryStore

__all__ = [
    "COMPARE_EVENT",
    "FAITHFUL",
    "PROFILES",
    "WRITE_POINTS",
    "CardConfig",
    "CardState",
    "DefectProfile",
    "EmulatedCard",
    "FileStore",
    "MemoryStore",
    "load_card_config",
    "parse_profile",
    "personalise",
]
