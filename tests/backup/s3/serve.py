"""Start moto's S3 server for a test: a fresh CA and a certificate for the host name "s3" (the
CA is written to /var/lib/s3-ca/ca.pem, a volume the stack's containers mount to verify TLS),
nginx terminating TLS on port 443 in front of moto on 127.0.0.1:5000, the bucket the test's
repository uses, then /run/s3/ready for the healthcheck."""

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
NGINX = """
pid {run}/nginx.pid;
error_log stderr;
events {{}}
http {{
    access_log off;
    client_max_body_size 0;
    server {{
        listen 443 ssl;
        ssl_certificate {run}/cert.pem;
        ssl_certificate_key {run}/key.pem;
        location / {{
            proxy_pass http://127.0.0.1:5000;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_request_buffering off;
        }}
    }}
}}
"""


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    signer: ec.EllipticCurvePrivateKey,
    ca: bool,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("s3")]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def main() -> int:
    CA_DIR.mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("pgstack test CA", ca_key, None, ca_key, ca=True)
    cert = _certificate("s3", key, ca.subject, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (RUN / "cert.pem").write_bytes(cert.public_bytes(pem))
    (RUN / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (CA_DIR / "ca.pem").write_bytes(ca.public_bytes(pem))
    os.chmod(CA_DIR / "ca.pem", 0o644)
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "5000"]
    )
    (RUN / "nginx.conf").write_text(NGINX.format(run=RUN))
    subprocess.run(["nginx", "-c", str(RUN / "nginx.conf")], check=True)
    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:5000",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106 -- moto accepts any key
    )
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
