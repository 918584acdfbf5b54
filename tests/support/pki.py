"""A throw-away CA for the test control plane, and the certificates it signs.

Every TLS connection in the Kubernetes tests is verified against this CA: the
API server's serving certificate, the admin client certificate (group
``system:masters``) and the service-account signing key all live in one temp dir.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The first address of the service range is the `kubernetes` Service's ClusterIP.
SERVICE_CIDR = "10.96.0.0/16"
API_SERVICE_IP = "10.96.0.1"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


@dataclass
class Pki:
    """Files of the throw-away CA, the API server's keys and the admin client pair."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    service_account_key: Path
    service_account_pub: Path


def make_pki(directory: Path) -> Pki:
    """Write a CA, the API server's serving pair, an admin client pair and the SA key."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("modelserve-test-ca")
    ca = _issue(ca_name, ca_key, ca_name, ca_key, ca=True)
    server_key = _key()
    server = _issue(
        _name("kube-apiserver"),
        server_key,
        ca_name,
        ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address(API_SERVICE_IP)),
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes.default.svc"),
        ],
    )
    client_key = _key()
    client = _issue(
        _name("modelserve-test-admin", "system:masters"),
        client_key,
        ca_name,
        ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    sa_key = _key()
    pki = Pki(
        ca_cert=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        service_account_key=directory / "sa.key",
        service_account_pub=directory / "sa.pub",
    )
    pki.ca_cert.write_bytes(pem_cert(ca))
    pki.server_cert.write_bytes(pem_cert(server))
    pki.server_key.write_bytes(pem_key(server_key))
    pki.client_cert.write_bytes(pem_cert(client))
    pki.client_key.write_bytes(pem_key(client_key))
    pki.service_account_key.write_bytes(pem_key(sa_key))
    pki.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for path in (pki.server_key, pki.client_key, pki.service_account_key):
        path.chmod(0o600)
    return pki


def make_serving_pair(directory: Path, dns_names: list[str]) -> Path:
    """A fresh CA plus ``tls.crt``/``tls.key`` for ``dns_names`` in ``directory``; the CA's path.

    The file names are controller-runtime's (its webhook server reads them from its
    cert dir), so a Go controller's webhooks serve what a test registers the CA of,
    as cert-manager would arrange in a cluster.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("modelserve-test-webhook-ca")
    ca = _issue(ca_name, ca_key, ca_name, ca_key, ca=True)
    key = _key()
    cert = _issue(
        _name(dns_names[0]),
        key,
        ca_name,
        ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[x509.DNSName(name) for name in dns_names],
    )
    (directory / "ca.crt").write_bytes(pem_cert(ca))
    (directory / "tls.crt").write_bytes(pem_cert(cert))
    (directory / "tls.key").write_bytes(pem_key(key))
    (directory / "tls.key").chmod(0o600)
    return directory / "ca.crt"
