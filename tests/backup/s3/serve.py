"""Start moto's S3 server for a test: a fresh CA and a certificate for the host name "s3" (the
CA is written to /var/lib/s3-ca/ca.pem, a volume the stack's containers mount to verify TLS),
TLS on port 443, the bucket the test's repository uses, then /run/s3/ready for the healthcheck."""

from __future__ import annotations

import datetime
import os
import pathlib
import subprocess
import sys
import time

import boto3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_DIR = pathlib.Path("/var/lib/s3-ca")
RUN = pathlib.Path("/run/s3")
BUCKET = os.environ.get("S3_BUCKET", "pgstack-test")


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
                 signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("s3")]),
                                        critical=False)
    return builder.sign(signer, hashes.SHA256())


def main() -> int:
    CA_DIR.mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("pgstack test CA", ca_key, None, ca_key, ca=True)
    cert = _certificate("s3", key, ca.subject, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (RUN / "cert.pem").write_bytes(cert.public_bytes(pem))
    (RUN / "key.pem").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (CA_DIR / "ca.pem").write_bytes(ca.public_bytes(pem))
    os.chmod(CA_DIR / "ca.pem", 0o644)
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "0.0.0.0", "-p", "443",
                               "-c", str(RUN / "cert.pem"), "-k", str(RUN / "key.pem")])
    client = boto3.client("s3", endpoint_url="https://127.0.0.1", verify=False,
                          region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    for _ in range(60):
        try:
            client.create_bucket(Bucket=BUCKET)
            break
        except Exception:  # not listening yet
            time.sleep(0.5)
    else:
        return 1
    (RUN / "ready").touch()
    return server.wait()


if __name__ == "__main__":
    sys.exit(main())
