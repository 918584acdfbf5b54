"""etcd (Debian ``etcd-server``) + the Kubernetes API server (``apiextensions-apiserver``).

The apiextensions-apiserver serves ``apiextensions.k8s.io`` and custom resources
only: no namespaces, pods, controllers or garbage collection. Tests install the
CRDs they need and play the controllers' part by writing ``status`` themselves.

One throw-away CA signs the API server's serving certificate (SANs 127.0.0.1 and
localhost) and a client certificate in the ``system:masters`` group, which the
delegating authorizer always allows; the generated kubeconfig verifies the
server against that CA, so TLS is checked end to end.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from modelserve.shared.net import free_port
from support.procs import ServerProcess, find_binary

APISERVER_HINT = (
    "go install k8s.io/apiextensions-apiserver@<pinned tag> into that dir (.ci/run does)"
)
ETCD_HINT = "install Debian's etcd-server package (.ci/run does)"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
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


@dataclass
class Pki:
    """Files of the throw-away CA, serving pair and ``system:masters`` client pair."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path) -> Pki:
    """Write a CA, a serving certificate for 127.0.0.1 and an admin client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelserve-test-ca")])
    ca = _issue(ca_name, ca_key, ca_name, ca_key, ca=True)
    server_key = _key()
    server = _issue(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
        server_key,
        ca_name,
        ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client_key = _key()
    client = _issue(
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, "modelserve-test-admin"),
            ]
        ),
        client_key,
        ca_name,
        ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    pki = Pki(
        ca_cert=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
    pki.ca_cert.write_bytes(_pem_cert(ca))
    pki.server_cert.write_bytes(_pem_cert(server))
    pki.server_key.write_bytes(_pem_key(server_key))
    pki.client_cert.write_bytes(_pem_cert(client))
    pki.client_key.write_bytes(_pem_key(client_key))
    for path in (pki.server_key, pki.client_key):
        path.chmod(0o600)
    return pki


def write_kubeconfig(path: Path, server: str, pki: Pki, context: str = "modelserve-test") -> Path:
    """A kubeconfig that authenticates with the client certificate and verifies the server."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": context,
                "cluster": {"server": server, "certificate-authority": str(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": context,
                "user": {
                    "client-certificate": str(pki.client_cert),
                    "client-key": str(pki.client_key),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class KubeApi:
    """A running etcd + API server pair and the kubeconfig that reaches it."""

    url: str
    kubeconfig: Path
    pki: Pki
    etcd: ServerProcess
    apiserver: ServerProcess
    base_dir: Path

    def ssl_context(self) -> ssl.SSLContext:
        """Client TLS for plain HTTP clients (httpx) talking to this API server."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.client_cert), str(self.pki.client_key))
        return ctx

    def stop(self) -> None:
        self.apiserver.stop()
        self.etcd.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


def start_etcd(base: Path) -> tuple[ServerProcess, str]:
    """Single-member etcd on free loopback ports with a temp data dir."""
    binary = find_binary("etcd", hint=ETCD_HINT)
    client_port, peer_port = free_port(), free_port()
    client_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    proc = ServerProcess(
        name="etcd",
        argv=[
            binary,
            "--name",
            "default",
            "--data-dir",
            str(base / "etcd"),
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"default={peer_url}",
            "--unsafe-no-fsync",
            "--log-level",
            "warn",
        ],
        log_path=base / "etcd.log",
    ).start()
    proc.wait_ready(
        lambda: httpx.get(f"{client_url}/health", timeout=1).json().get("health") == "true",
        timeout=30,
    )
    return proc, client_url


def start_kube_api() -> KubeApi:
    """Start etcd and the apiextensions-apiserver against it; wait until /readyz is ok."""
    apiserver_bin = find_binary("apiextensions-apiserver", hint=APISERVER_HINT)
    find_binary("etcd", hint=ETCD_HINT)
    base = Path(tempfile.mkdtemp(prefix="modelserve-kube-"))
    pki = make_pki(base / "pki")
    etcd, etcd_url = start_etcd(base)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    # The API server wants kubeconfigs for delegated authn/authz and the core API;
    # none of them exists here, so they point at a closed port. Client certificates
    # (--client-ca-file) authenticate without lookups, and system:masters is
    # always authorized, so nothing ever needs to reach them.
    nowhere = write_kubeconfig(base / "nowhere.kubeconfig", "https://127.0.0.1:1", pki)
    kubeconfig = write_kubeconfig(base / "kubeconfig", url, pki)
    apiserver = ServerProcess(
        name="apiextensions-apiserver",
        argv=[
            apiserver_bin,
            "--etcd-servers",
            etcd_url,
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            str(port),
            "--tls-cert-file",
            str(pki.server_cert),
            "--tls-private-key-file",
            str(pki.server_key),
            "--client-ca-file",
            str(pki.ca_cert),
            "--kubeconfig",
            str(nowhere),
            "--authentication-kubeconfig",
            str(nowhere),
            "--authorization-kubeconfig",
            str(nowhere),
            "--authentication-skip-lookup",
            "--enable-priority-and-fairness=false",
            "--disable-admission-plugins",
            "NamespaceLifecycle,MutatingAdmissionPolicy,MutatingAdmissionWebhook,"
            "ValidatingAdmissionWebhook,"
            "ValidatingAdmissionPolicy",
            "--cert-dir",
            str(base / "certs"),
        ],
        log_path=base / "apiserver.log",
    ).start()
    api = KubeApi(url, kubeconfig, pki, etcd, apiserver, base)
    ctx = api.ssl_context()
    # informer-sync never passes here: the core-API informers (namespaces,
    # webhook configurations) point at a core API that does not exist in this
    # setup. Every other readiness check (etcd, CRD informers, controllers) must.
    ready = f"{url}/readyz?exclude=informer-sync"
    try:
        apiserver.wait_ready(
            lambda: httpx.get(ready, verify=ctx, timeout=2).status_code == 200,
            timeout=90,
        )
    except Exception:
        etcd.stop()
        raise
    return api
