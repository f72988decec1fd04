"""The controller's own certificate authority for node Docker endpoints (mutual TLS).

The CA lives under the controller's state directory (``pki/``). Nodes get a server certificate through
the bootstrap template; the controller talks to them with a client certificate signed by the same CA.
A Docker endpoint that refuses clients without a certificate of this CA is the only configuration used.
Called by ``burstctl pki init`` and by the controller's wiring at start-up.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificateAuthority", "TlsFiles"]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class CertificateAuthority:
    """A small EC P-256 CA kept in ``directory`` (created 0700 on first use)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.ca_cert_path = self.dir / "ca.pem"
        self.ca_key_path = self.dir / "ca-key.pem"

    def ensure(self, common_name: str = "burst-controller CA") -> Path:
        """Create the CA if it does not exist yet; return the CA certificate path."""
        if self.ca_cert_path.exists() and self.ca_key_path.exists():
            return self.ca_cert_path
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                              content_commitment=False, key_encipherment=False, data_encipherment=False,
                              key_agreement=False, encipher_only=False, decipher_only=False),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_private(self.ca_key_path, _key_pem(key))
        self.ca_cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return self.ca_cert_path

    def _load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        self.ensure()
        cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
        key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key

    def issue_pem(
        self, common_name: str, *, server: bool, ips: tuple[str, ...] = (), dns: tuple[str, ...] = (),
        days: int = 365,
    ) -> tuple[bytes, bytes]:
        """A (certificate PEM, key PEM) pair for a node (server=True) or the controller (client)."""
        ca_cert, ca_key = self._load()
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        names += [x509.DNSName(d) for d in dns]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def issue_files(self, name: str, *, server: bool, ips: tuple[str, ...] = (),
                    dns: tuple[str, ...] = ()) -> TlsFiles:
        """Issue a pair into ``<dir>/<name>-cert.pem`` / ``<name>-key.pem`` unless it already exists."""
        cert_path, key_path = self.dir / f"{name}-cert.pem", self.dir / f"{name}-key.pem"
        if not (cert_path.exists() and key_path.exists()):
            cert, key = self.issue_pem(name, server=server, ips=ips, dns=dns)
            _write_private(key_path, key)
            cert_path.write_bytes(cert)
        return TlsFiles(ca=self.ca_cert_path, cert=cert_path, key=key_path)

    def client_files(self) -> TlsFiles:
        """The controller's own client certificate for talking to nodes."""
        self.ensure()
        return self.issue_files("controller", server=False)
