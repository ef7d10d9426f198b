"""COMPUTE DIGITAL SIGNATURE: real RSA-2048 PKCS#1 v1.5, verifiable with the card's certificate."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from harness.apdu import commands as C
from harness.apdu import sw as SW
from harness.apdu.model import CommandAPDU
from tests.support import Host

CASES = [("jpki-auth", 0x0017, 0x000A), ("jpki-sign", 0x001A, 0x0001)]


def _read_whole(host: Host, fid: int) -> bytes:
    r = host.send(C.read_binary(0, 65536, sfi=fid))
    assert r.sw == SW.OK
    return r.data


@pytest.mark.parametrize(("pin_id", "key_fid", "cert_fid"), CASES)
def test_signature_verifies_against_the_card_certificate(
    host: Host, pin_id: str, key_fid: int, cert_fid: int
) -> None:
    message = b"pinloop signs this"
    digest_info = C.sha256_digest_info(hashlib.sha256(message).digest())
    host.select_pin(pin_id)
    assert host.sw(C.select_ef(key_fid)) == SW.OK
    assert host.sw(C.compute_signature(digest_info)) == SW.SECURITY_STATUS_NOT_SATISFIED
    assert host.sw(C.select_ef(PINS_FID[pin_id])) == SW.OK
    assert host.verify(pin_id) == SW.OK
    assert host.sw(C.select_ef(key_fid)) == SW.OK
    r = host.send(C.compute_signature(digest_info))
    assert r.sw == SW.OK and len(r.data) == 256

    cert = x509.load_der_x509_certificate(_read_whole(host, cert_fid))
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    key.verify(r.data, message, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        key.verify(r.data, b"something else", padding.PKCS1v15(), hashes.SHA256())
    # the certificate chains to the card's test CA of its use (EF 000B auth, 0002 sign)
    ca = x509.load_der_x509_certificate(
        _read_whole(host, 0x000B if pin_id == "jpki-auth" else 0x0002)
    )
    cert.verify_directly_issued_by(ca)


PINS_FID = {"jpki-auth": 0x0018, "jpki-sign": 0x001B}


def test_the_auth_pin_does_not_open_the_sign_key(host: Host) -> None:
    host.select_pin("jpki-auth")
    assert host.verify("jpki-auth") == SW.OK
    assert host.sw(C.select_ef(0x001A)) == SW.OK
    assert host.sw(C.compute_signature(b"\x01" * 51)) == SW.SECURITY_STATUS_NOT_SATISFIED


def test_sign_errors(host: Host) -> None:
    host.select_pin("jpki-auth")
    assert host.verify("jpki-auth") == SW.OK
    assert host.sw(C.compute_signature(b"\x01" * 51)) == SW.INCOMPATIBLE_FILE_STRUCTURE  # a PIN
    assert host.sw(C.select_ef(0x0017)) == SW.OK
    assert host.sw(CommandAPDU(0x80, 0x2A, 0x00, 0x80, b"\x01" * 51)) == SW.WRONG_LENGTH  # no Le
    assert host.sw(CommandAPDU(0x80, 0x2A, 0x00, 0x80, b"\x01" * 51, le=128)) == SW.WRONG_LENGTH
    assert host.sw(C.compute_signature(b"\x01" * 246)) == SW.WRONG_LENGTH  # > k - 11
    assert host.sw(CommandAPDU(0x80, 0x2A, 0x01, 0x80, b"\x01", le=256)) == SW.INCORRECT_P1P2
    assert host.sw(CommandAPDU(0x80, 0x2A, 0x00, 0x97, b"\x01", le=256)) == SW.INCORRECT_P1P2
    assert host.send(C.compute_signature(b"\x01" * 245)).sw == SW.OK
    host.select_app("jpki")
    assert host.sw(C.compute_signature(b"\x01")) == SW.NO_CURRENT_EF
