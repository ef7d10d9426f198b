"""RSA-2048 keys and X.509 certificates of an emulated card.

The card signs exactly what the host sends (a DER DigestInfo), with PKCS#1 v1.5 type-1 padding
applied by the card, as JPKI's ``80 2A 00 80`` does. ``cryptography`` only signs messages it
hashes itself, so the padding and the RSA private operation (CRT) are done here on the
library's key numbers.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

KEY_BITS = 2048
MODULUS_BYTES = KEY_BITS // 8
#: the longest input PKCS#1 v1.5 type-1 padding can carry in a 2048-bit block
MAX_SIGN_INPUT = MODULUS_BYTES - 11


@dataclass(frozen=True)
class RsaKey:
    private: rsa.RSAPrivateKey
    _numbers: rsa.RSAPrivateNumbers = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_numbers", self.private.private_numbers())

    @classmethod
    def generate(cls) -> RsaKey:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS))

    @classmethod
    def from_pem(cls, pem: str) -> RsaKey:
        # The consistency check of RSA key material costs ~70 ms a key; keys come from the
        # card's own state file, written by personalisation, so only the shape is checked.
        key = serialization.load_pem_private_key(
            pem.encode("ascii"), password=None, unsafe_skip_rsa_key_validation=True
        )
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != KEY_BITS:
            raise ValueError("not an RSA-2048 private key")
        return cls(key)

    def to_pem(self) -> str:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")

    def sign_raw_pkcs1(self, data: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 over ``data`` as given (the host supplies the DigestInfo)."""
        if not 1 <= len(data) <= MAX_SIGN_INPUT:
            raise ValueError(f"input must be 1..{MAX_SIGN_INPUT} bytes, got {len(data)}")
        pad = MODULUS_BYTES - 3 - len(data)
        block = b"\x00\x01" + b"\xff" * pad + b"\x00" + data
        m = int.from_bytes(block, "big")
        n = self._numbers
        s1 = pow(m, n.dmp1, n.p)
        s2 = pow(m, n.dmq1, n.q)
        h = (n.iqmp * (s1 - s2)) % n.p
        s = s2 + h * n.q
        return s.to_bytes(MODULUS_BYTES, "big")


#: the longest CommonName of a certificate. X.509 bounds it at 64 characters (ub-common-name,
#: RFC 5280); ``cryptography`` refuses more than 64 UTF-8 *bytes* (a kanji takes 3), and that
#: is the limit the card's certificates are made to
COMMON_NAME_MAX_BYTES = 64
_CA_PREFIX = "pinloop test CA for "
#: the longest card name: the CA certificate's CommonName holds it after ``_CA_PREFIX``
CARD_NAME_MAX = COMMON_NAME_MAX_BYTES - len(_CA_PREFIX)
_SIGN_INFIX = " sign (test) "


def subject_names(card: str, holder: str) -> dict[str, str]:
    """The CommonName of each certificate of a card named ``card`` (ASCII) whose test holder
    is ``holder``: ``ca``, ``auth`` and ``sign`` (the sign certificate of a real card carries
    the holder's 4 attributes; ours carries the test name)."""
    return {
        "ca": _CA_PREFIX + card,
        "auth": f"{card} auth (test)",
        "sign": card + _SIGN_INFIX + holder,
    }


def holder_name_room(card: str) -> int:
    """UTF-8 bytes left for the holder's name in the sign certificate of a card named
    ``card``."""
    return COMMON_NAME_MAX_BYTES - len((card + _SIGN_INFIX).encode("utf-8"))


_NOT_BEFORE = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(2035, 12, 31, tzinfo=datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pinloop emulated card (NOT JPKI)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_certificate(
    subject: str, key: RsaKey, issuer: str, issuer_key: RsaKey, *, ca: bool
) -> bytes:
    """A DER certificate for ``key`` signed by ``issuer_key`` (self-signed when they match)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    cert = builder.sign(issuer_key.private, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.DER)
