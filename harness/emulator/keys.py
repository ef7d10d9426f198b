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
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

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


#: the JPKI attributes a real sign certificate carries in its subjectAltName (otherName):
#: name, sex, birth date, address (the myna tools decode these four)
JPKI_ATTRIBUTE_OIDS = {
    "name": x509.ObjectIdentifier("1.2.392.200149.8.5.5.1"),
    "sex": x509.ObjectIdentifier("1.2.392.200149.8.5.5.3"),
    "birth_date": x509.ObjectIdentifier("1.2.392.200149.8.5.5.4"),
    "address": x509.ObjectIdentifier("1.2.392.200149.8.5.5.5"),
}
#: a certificate policy of pinloop's test certificates: under the private enterprise number
#: that RFC 5612 reserves for documentation, so that no policy of a real issuer is claimed
TEST_POLICY = x509.ObjectIdentifier("1.3.6.1.4.1.32473.7.1")
#: where the test CRLs and the test OCSP responder would be: this machine, never J-LIS
TEST_URL = "http://127.0.0.1:8080/pinloop-test"
#: the certificate a real card holds, by use: the organisational unit of its CA (as on the
#: real card: "JPKI for user authentication" / "JPKI for digital signature")
USES = {"auth": "JPKI for user authentication", "sign": "JPKI for digital signature"}
_AGENCY = "Japan Agency for Local Authority Information Systems"


def ca_name(use: str) -> x509.Name:
    """The test CA of ``use`` (auth or sign), in the real CAs' structure (C, O, OU, OU) with
    "test" in every part: a client parses it as it parses the real issuer, and nobody can
    take it for one."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "JPKI test (pinloop)"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"{USES[use]} test"),
            x509.NameAttribute(
                NameOID.ORGANIZATIONAL_UNIT_NAME, f"{_AGENCY} test stand-in (NOT J-LIS)"
            ),
        ]
    )


@dataclass(frozen=True)
class Holder:
    """What a sign certificate says of its holder (the card config's test identity)."""

    name: str
    sex: str
    birth_date: str
    address: str


def _der_string(tag: int, text: str) -> bytes:
    body = text.encode("utf-8")
    n = len(body)
    length = (
        bytes((n,))
        if n < 0x80
        else bytes((0x81, n))
        if n <= 0xFF
        else b"\x82" + n.to_bytes(2, "big")
    )
    return bytes((tag,)) + length + body


def make_certificate(
    subject: str | x509.Name,
    key: RsaKey,
    issuer: str | x509.Name,
    issuer_key: RsaKey,
    *,
    ca: bool,
    use: str | None = None,
    holder: Holder | None = None,
) -> bytes:
    """A DER certificate for ``key`` signed by ``issuer_key`` (self-signed when they match),
    in the real card's profile: key identifiers, a key usage (``use`` auth:
    digitalSignature, sign: nonRepudiation; a CA: keyCertSign and cRLSign), a test policy, a
    CRL distribution point and an OCSP address on this machine, and on a sign certificate
    (``holder``) the four JPKI attributes in its subjectAltName."""
    subject_name = _name(subject) if isinstance(subject, str) else subject
    issuer_name = _name(issuer) if isinstance(issuer, str) else issuer
    public = key.private.public_key()
    which = use or "auth"
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(issuer_name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.private.public_key()),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca and which == "auth",
                content_commitment=not ca and which == "sign",  # nonRepudiation
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.CertificatePolicies(
                [
                    x509.PolicyInformation(
                        TEST_POLICY,
                        [
                            f"{TEST_URL}/cps.html",
                            x509.UserNotice(
                                None,
                                "pinloop emulated My Number card: a TEST certificate of a "
                                "TEST identity, issued by a test CA that stands in for the "
                                f"JPKI {which} CA; it proves nothing about anybody.",
                            ),
                        ],
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier(f"{TEST_URL}/{which}.crl")],
                        None,
                        None,
                        [x509.DirectoryName(issuer_name)],
                    )
                ]
            ),
            critical=False,
        )
    )
    if not ca:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(f"{TEST_URL}/ocsp/{which}"),
                    )
                ]
            ),
            critical=False,
        )
    if holder is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.OtherName(JPKI_ATTRIBUTE_OIDS["name"], _der_string(0x0C, holder.name)),
                    x509.OtherName(JPKI_ATTRIBUTE_OIDS["sex"], _der_string(0x13, holder.sex)),
                    x509.OtherName(
                        JPKI_ATTRIBUTE_OIDS["birth_date"], _der_string(0x13, holder.birth_date)
                    ),
                    x509.OtherName(
                        JPKI_ATTRIBUTE_OIDS["address"], _der_string(0x0C, holder.address)
                    ),
                ]
            ),
            critical=False,
        )
    cert = builder.sign(issuer_key.private, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.DER)
