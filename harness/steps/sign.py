"""``sign: {key}``: COMPUTE DIGITAL SIGNATURE with one of the card profile's keys; with
``expect: {signature: valid}`` the signature is checked against the key's certificate EF."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.apdu import commands as C
from harness.apdu.model import ResponseAPDU
from harness.capabilities import Capability
from harness.run.expect import check
from harness.scenario.model import Step
from harness.scenario.schema import one_of
from harness.steps import ANSWER, StepKind

if TYPE_CHECKING:
    from harness.run.session import CardSession
    from harness.scenario.parse import Parse
    from harness.scenario.schema import CardRefs


@dataclass(frozen=True)
class Sign(Step):
    action: ClassVar[str] = "sign"
    key: str = "auth"


def schema(refs: CardRefs) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["key"],
        "properties": {"key": one_of(refs.keys, "signing keys")},
    }


def parse(c: Parse, body: Any, common: dict[str, Any]) -> Sign:
    expect = common["expect"]
    if expect is not None and expect.signature == "valid":  # the certificate in one READ
        c.require(Capability.EXTENDED_APDU, "sign with expect signature: valid")
    return Sign(**common, key=body["key"])


def run(session: CardSession, s: Sign) -> None:
    key = session.card.sign_keys[s.key]
    if session.app != key.app:
        session.select_app(key.app)
    session.tx(C.select_ef(key.key_fid))
    session.ef = key.key_fid
    message = os.urandom(32)
    digest = C.sha256_digest_info(hashlib.sha256(message).digest())
    resp = session.tx(C.compute_signature(digest))
    check(session, s, resp, None, None)
    if s.expect is not None and s.expect.signature == "valid":
        _verify_signature(session, resp, message, key.cert_fid)


def _verify_signature(
    session: CardSession, resp: ResponseAPDU, message: bytes, cert_fid: int
) -> None:
    from cryptography import x509  # only when a signature is checked
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    cert_resp = session.tx(C.read_binary(0, 65536, sfi=cert_fid))
    session.ef = cert_fid
    try:
        key = x509.load_der_x509_certificate(cert_resp.data).public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        key.verify(resp.data, message, padding.PKCS1v15(), hashes.SHA256())
    except (ValueError, AssertionError, InvalidSignature) as exc:
        raise session.fail(
            "signature against the card's certificate",
            "valid",
            f"{type(exc).__name__} ({len(resp.data)} bytes)",
        ) from None


KIND = StepKind(
    "sign",
    Sign,
    schema,
    parse,
    run,
    doc=(
        "COMPUTE DIGITAL SIGNATURE with that key; `expect: {signature: valid}` checks it "
        "against the card's certificate"
    ),
    expects=lambda s: ANSWER | {"signature"},
)
