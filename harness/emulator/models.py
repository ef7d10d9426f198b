"""Card models: the answer-to-reset and what the chip supports (contact T=1, extended length
or not, contactless)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CardModel:
    name: str
    atr: bytes
    interface: str  # "contact" or "contactless"
    extended_length: bool
    description: str


MODELS: dict[str, CardModel] = {
    m.name: m
    for m in (
        CardModel(
            "jpki-contact",
            bytes.fromhex("3BE000FF8131FE4514"),
            "contact",
            True,
            "original contact ATR (the one OpenSC's JPKI driver matches); T=1, no historical "
            "bytes; extended Le accepted as on the cards pymyna/nfcpy read",
        ),
        CardModel(
            "jpki-extended",
            bytes.fromhex("3BDA13FF8131FB468012392F31C173C601C03B"),
            "contact",
            True,
            "newer contact ATR whose card capabilities (C6 01 C0) declare extended Lc/Le",
        ),
        CardModel(
            "jpki-short",
            bytes.fromhex("3BC5FF8131FB458073C6010000"),
            "contact",
            False,
            "contact ATR 'JPKI (03)' with no extended length advertised: extended APDUs → 6700",
        ),
        CardModel(
            "jpki-contactless",
            bytes.fromhex("3B888001000005E0B381A1007F"),
            "contactless",
            True,
            "PC/SC pseudo-ATR of the Type B card (max frame 256, FWI 10)",
        ),
    )
}
DEFAULT_MODEL = "jpki-contact"
