"""Personalisation: turn a :class:`CardConfig` into a fresh card's NVM (:class:`CardState`).

Generates the card's RSA-2048 keys (auth, sign, and two per-card test CAs, one per use), its
certificates (in the real profile: harness.emulator.keys.make_certificate), and
the contents of every readable EF in the layouts public clients parse (TLV structures, physical
sizes with ``FF`` filler). Contents that real cards fill with data nobody publishes (CV
certificates, images) are deterministic filler of the right size and shape.
"""

from __future__ import annotations

import hashlib

from harness.cards.jpki.layout import PINS, PINS_BY_ID
from harness.emulator.config import CardConfig
from harness.emulator.keys import Holder, RsaKey, ca_name, make_certificate, subject_names
from harness.emulator.state import CardState, PinState


def _len(n: int) -> bytes:
    """BER length octets."""
    if n < 0x80:
        return bytes((n,))
    if n <= 0xFF:
        return bytes((0x81, n))
    return bytes((0x82,)) + n.to_bytes(2, "big")


def tlv(tag: int, value: bytes) -> bytes:
    tag_bytes = tag.to_bytes(2 if tag > 0xFF else 1, "big")
    return tag_bytes + _len(len(value)) + value


def _filler(label: str, size: int) -> bytes:
    """Deterministic stand-in bytes for content no public source describes."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def _pad(data: bytes, size: int) -> bytes:
    if len(data) > size:
        raise ValueError(f"content of {len(data)} bytes does not fit an EF of {size}")
    return data + b"\xff" * (size - len(data))


def _cv_certificate(label: str) -> bytes:
    """A 568-byte card-verifiable certificate shape: 7F21 { 5F4E (297 B), 5F37 (256 B) }."""
    body = tlv(0x5F4E, _filler(label + "/body", 297)) + tlv(0x5F37, _filler(label + "/sig", 256))
    return tlv(0x7F21, body)


def _offset_table(values: list[bytes]) -> bytes:
    """An 8-byte table of 2-byte offsets, as the first element of the attribute records."""
    offsets = []
    pos = 0
    for v in values:
        offsets.append(pos)
        pos += len(v)
    return b"".join(o.to_bytes(2, "big") for o in offsets[:4]).ljust(8, b"\x00")


def personalise(config: CardConfig) -> CardState:
    """Generate a new card: keys, certificates, EF contents, PINs at their maximum tries."""
    ident = config.identity
    # two test CAs, as the real card has (one per use); the auth CA's key also signs the
    # card's own test records (the 入力補助 integrity record) and stays in the card state
    ca = RsaKey.generate()
    sign_ca = RsaKey.generate()
    auth = RsaKey.generate()
    sign = RsaKey.generate()
    names = subject_names(config.name, ident.name)  # the config checked their lengths
    auth_ca_name, sign_ca_name = ca_name("auth"), ca_name("sign")
    ca_cert = make_certificate(auth_ca_name, ca, auth_ca_name, ca, ca=True, use="auth")
    sign_ca_cert = make_certificate(
        sign_ca_name, sign_ca, sign_ca_name, sign_ca, ca=True, use="sign"
    )
    auth_cert = make_certificate(names["auth"], auth, auth_ca_name, ca, ca=False, use="auth")
    holder = Holder(ident.name, ident.sex, ident.birth_date, ident.address)
    sign_cert = make_certificate(
        names["sign"], sign, sign_ca_name, sign_ca, ca=False, use="sign", holder=holder
    )

    my_number = _pad(b"\xff\x10\x0c" + ident.my_number.encode(), 17)
    attrs = [
        ident.name.encode(),
        ident.address.encode(),
        ident.birth_date.encode(),
        ident.sex.encode(),
    ]
    attr_elems = b"".join(
        tlv(t, v) for t, v in zip((0xDF22, 0xDF23, 0xDF24, 0xDF25), attrs, strict=True)
    )
    attributes = tlv(0xFF20, tlv(0xDF21, _offset_table(attrs)) + attr_elems)
    integrity_sig = ca.sign_raw_pkcs1(hashlib.sha256(my_number + attr_elems).digest())
    integrity = tlv(
        0xFF30,
        tlv(0xDF31, hashlib.sha256(my_number).digest())
        + tlv(0xDF32, hashlib.sha256(attr_elems).digest())
        + tlv(0xDF33, integrity_sig),
    )
    basic_info = _pad(
        tlv(
            0xFF40,
            tlv(0xDF41, bytes.fromhex("01030E01"))
            + tlv(0xDF42, _filler("kenhojo/key-id", 16))
            + tlv(0xDF43, _filler("kenhojo/df43", 128)),
        ),
        256,
    )

    birth_record = tlv(
        0xFF10,
        tlv(0xDF11, ident.birth_date.encode())
        + tlv(0xDF12, _filler("kenkaku/birth-pub", 64))
        + tlv(0xDF13, _filler("kenkaku/birth-sig", 256)),
    )
    face = tlv(
        0xFF20,
        tlv(0xDF21, bytes(8))
        + tlv(0xDF22, ident.birth_date.encode())
        + tlv(0xDF23, ident.sex.encode())
        + tlv(0xDF25, _filler("kenkaku/name-png", 300))
        + tlv(0xDF26, _filler("kenkaku/address-png", 600))
        + tlv(0xDF27, _filler("kenkaku/photo-jp2", 1200))
        + tlv(0xDF29, (ident.expiry_year + "1231").encode()),
    )
    kenkaku_info = tlv(0xFF30, tlv(0xDF33, b"\x01") + tlv(0xDF34, ident.municipality.encode()))
    card_id = (
        b"\x01\x1c" + (ident.serial + ident.municipality + ident.expiry_year + "1231").encode()
    )

    contents = {
        "jpki/sign-cert": sign_cert,
        "jpki/sign-ca-cert": sign_ca_cert,
        "jpki/auth-cert": auth_cert,
        "jpki/auth-ca-cert": ca_cert,
        "jpki/token-info": b"JPKIAPICCTOKEN2".ljust(32, b" ") + b"\x00" * 128,
        "jpki/cert-availability": bytes.fromhex("8F8F00"),
        "kenhojo/my-number": my_number,
        "kenhojo/attributes": attributes,
        "kenhojo/integrity": integrity,
        "kenhojo/cv-cert": _cv_certificate("kenhojo"),
        "kenhojo/basic-info": basic_info,
        "kenkaku/birth": birth_record,
        "kenkaku/face": face,
        "kenkaku/basic-info": kenkaku_info,
        "kenkaku/cv-cert": _cv_certificate("kenkaku"),
        "kenkaku/my-number-image": tlv(0xFF50, _filler("kenkaku/number-png", 500)),
        "common/card-id": card_id,
    }
    secrets = config.secrets()
    pins = {}
    for spec in PINS:
        # a figure the profile establishes, else the card config's (never the layout's)
        most = spec.established_max
        tries = most if most is not None else config.verification_code_tries
        pins[spec.id] = PinState(secrets[spec.id].encode("ascii"), tries, tries)
    assert set(pins) == set(PINS_BY_ID)
    return CardState(
        name=config.name,
        model=config.model,
        pins=pins,
        reset_codes={k: v.encode("ascii") for k, v in config.reset_codes.items()},
        contents=contents,
        keys={"jpki-auth": auth, "jpki-sign": sign, "ca": ca},
        identity={"name": ident.name, "my_number": ident.my_number},
    )
