"""A throwaway certificate authority and a server certificate it signs, for the edge's HTTPS.

The tests verify every TLS connection against this CA (never with verification off), so a wrong
certificate, key or name on the edge fails them.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Certificates:
    """PEM text of the CA's certificate, and of the server's certificate and key."""

    ca: str
    certificate: str
    key: str

    def write_ca(self, path: Path) -> Path:
        path.write_text(self.ca)
        return path


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def issue(names: list[str], addresses: list[str]) -> Certificates:
    """A new CA, and a server certificate for these DNS names and IP addresses, valid a day."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("pgstack test CA"))
        .issuer_name(_name("pgstack test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    server, key_pem = _leaf(
        ca.subject, ca_key, names[0], x509.OID_SERVER_AUTH,
        x509.SubjectAlternativeName(alt_names),
    )  # fmt: skip
    return Certificates(ca=_pem(ca), certificate=_pem(server), key=key_pem)


def client_certificate(ca_pem: str, ca_key_pem: str, name: str) -> tuple[str, str]:
    """A client certificate (and its key) for `name`, signed by an existing CA: what a host
    that holds a retired CA's key could still make."""
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    client, key_pem = _leaf(ca.subject, ca_key, name, x509.OID_CLIENT_AUTH)
    return _pem(client), key_pem


def _leaf(
    issuer: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
    name: str,
    usage: x509.ObjectIdentifier,
    alt_names: x509.SubjectAlternativeName | None = None,
) -> tuple[x509.Certificate, str]:
    """A certificate for `name` signed by the CA's key, valid a day, and its key (PEM)."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        # Python 3.13 verifies strictly (VERIFY_X509_STRICT): it wants the issuer's key id.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if alt_names is not None:
        builder = builder.add_extension(alt_names, critical=False)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return builder.sign(ca_key, hashes.SHA256()), key_pem
