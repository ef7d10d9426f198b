"""The emulated card's certificates in the real card's profile: sizes, extensions, issuers.

What real cards hold (public sources): an auth certificate of about 1,583 bytes (its header
``30 82 06 2B`` quoted by one client), so a reader that reads 256 bytes at a time sees 7
chunks; keyUsage digitalSignature (auth) and nonRepudiation (sign); the sign certificate's
subjectAltName carries the holder's name, sex, birth date and address under the JPKI attribute
OIDs ``1.2.392.200149.8.5.5.{1,3,4,5}``; two CAs, one per use, named ``C=JP, O=JPKI, OU=JPKI
for user authentication | digital signature, OU=Japan Agency for Local Authority Information
Systems``. The emulator's are test certificates in that structure, with "test" in every name.
"""

from __future__ import annotations

import math

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from harness.emulator import load_card_config, personalise
from harness.emulator.keys import JPKI_ATTRIBUTE_OIDS

REAL_AUTH_BYTES = 0x062B + 4  # 1583


@pytest.fixture(scope="module")
def certs() -> dict[str, x509.Certificate]:
    state = personalise(load_card_config())
    return {
        k: x509.load_der_x509_certificate(state.contents[f"jpki/{k}"])
        for k in ("auth-cert", "sign-cert", "auth-ca-cert", "sign-ca-cert")
    }


def _der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


def test_sizes_are_those_of_real_certificates(certs: dict[str, x509.Certificate]) -> None:
    auth = len(_der(certs["auth-cert"]))
    assert abs(auth - REAL_AUTH_BYTES) <= REAL_AUTH_BYTES // 10, auth
    assert math.ceil(auth / 256) == 7  # 7 short READ BINARY chunks, as on a real card
    sign = len(_der(certs["sign-cert"]))
    assert 1600 <= sign <= 2200 and sign > auth, sign  # larger: it carries 4 attributes
    header = _der(certs["auth-cert"])[:4]
    assert header[:2] == b"\x30\x82" and int.from_bytes(header[2:], "big") + 4 == auth


def test_key_usage_as_on_the_real_card(certs: dict[str, x509.Certificate]) -> None:
    auth = certs["auth-cert"].extensions.get_extension_for_class(x509.KeyUsage)
    sign = certs["sign-cert"].extensions.get_extension_for_class(x509.KeyUsage)
    assert auth.critical and auth.value.digital_signature and not auth.value.content_commitment
    assert sign.critical and sign.value.content_commitment and not sign.value.digital_signature
    for ca in ("auth-ca-cert", "sign-ca-cert"):
        usage = certs[ca].extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign and usage.crl_sign


def test_the_sign_certificate_carries_the_holder_under_the_jpki_oids(
    certs: dict[str, x509.Certificate],
) -> None:
    ident = load_card_config().identity
    san = certs["sign-cert"].extensions.get_extension_for_class(x509.SubjectAlternativeName)
    values = {
        o.type_id.dotted_string: o.value for o in san.value.get_values_for_type(x509.OtherName)
    }
    want = {"name": ident.name, "sex": ident.sex, "birth_date": ident.birth_date}
    want["address"] = ident.address
    for field, text in want.items():
        der = values[JPKI_ATTRIBUTE_OIDS[field].dotted_string]
        assert der[0] in (0x0C, 0x13)  # UTF8String or PrintableString, a DER string
        start = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
        assert der[start:].decode("utf-8") == text, field
    with pytest.raises(x509.ExtensionNotFound):
        certs["auth-cert"].extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)


def test_two_test_cas_in_the_real_issuer_structure(certs: dict[str, x509.Certificate]) -> None:
    auth_issuer, sign_issuer = certs["auth-cert"].issuer, certs["sign-cert"].issuer
    assert auth_issuer != sign_issuer
    for issuer, use in ((auth_issuer, "user authentication"), (sign_issuer, "digital signature")):
        types = [a.oid for rdn in issuer.rdns for a in rdn]
        assert types == [
            NameOID.COUNTRY_NAME,
            NameOID.ORGANIZATION_NAME,
            NameOID.ORGANIZATIONAL_UNIT_NAME,
            NameOID.ORGANIZATIONAL_UNIT_NAME,
        ]
        texts = [str(a.value) for rdn in issuer.rdns for a in rdn]
        assert texts[0] == "JP" and "JPKI" in texts[1] and f"JPKI for {use}" in texts[2]
        assert "Japan Agency for Local Authority Information Systems" in texts[3]
        assert all("test" in t for t in texts[1:]), texts  # never taken for the real one


@pytest.mark.parametrize(
    ("leaf", "ca"), [("auth-cert", "auth-ca-cert"), ("sign-cert", "sign-ca-cert")]
)
def test_each_certificate_chains_to_its_own_ca(
    certs: dict[str, x509.Certificate], leaf: str, ca: str
) -> None:
    cert, issuer = certs[leaf], certs[ca]
    assert cert.issuer == issuer.subject
    key = issuer.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert cert.signature_hash_algorithm is not None
    key.verify(
        cert.signature,
        cert.tbs_certificate_bytes,
        padding.PKCS1v15(),
        cert.signature_hash_algorithm,
    )
    other = certs["sign-ca-cert" if ca == "auth-ca-cert" else "auth-ca-cert"].public_key()
    assert isinstance(other, rsa.RSAPublicKey)
    with pytest.raises(InvalidSignature):  # the other CA did not sign it
        other.verify(
            cert.signature,
            cert.tbs_certificate_bytes,
            padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_crl_and_ocsp_point_at_a_local_test_url(certs: dict[str, x509.Certificate]) -> None:
    for name, cert in certs.items():
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        urls = [str(n.value) for p in points for n in p.full_name or ()]
        assert urls and all(u.startswith("http://127.0.0.1:") for u in urls), (name, urls)
    for leaf in ("auth-cert", "sign-cert"):
        aia = certs[leaf].extensions.get_extension_for_class(x509.AuthorityInformationAccess)
        assert all(str(d.access_location.value).startswith("http://127.0.0.1:") for d in aia.value)
