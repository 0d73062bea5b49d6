"""A certificate authority made locally (cryptography) for the broker's TLS listener: the broker's
certificate (127.0.0.1 and localhost) and one client certificate per device whose subject common
name is the device id, as AWS IoT names a thing by its certificate. EC P-256 keys: what every TLS
stack the devices use (OpenSSL, s2n in the AWS IoT SDK, Go's) speaks."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LIFETIME = dt.timedelta(days=825)


@dataclass(frozen=True, slots=True)
class TlsIdentity:
    """What a TLS client needs: the CA to trust, and (mutual TLS) its certificate and key."""

    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


class LocalCA:
    """The CA's files in `directory` (`ca.pem`, `ca.key`, `server.pem`, `server.key`, and
    `devices/<id>.pem|.key`), made once and reused."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_cert = directory / "ca.pem"
        self.server_cert = directory / "server.pem"
        self.server_key = directory / "server.key"

    def create(self) -> None:
        if self.ca_cert.exists():
            return
        (self.directory / "devices").mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Twinfleet local CA"))
            .issuer_name(_name("Twinfleet local CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(self.directory / "ca.key", key)
        self.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        san = x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        )
        self._issue("localhost", self.server_cert, self.server_key, ExtendedKeyUsageOID.SERVER_AUTH, san)

    def _issue(
        self,
        common_name: str,
        cert_path: Path,
        key_path: Path,
        usage: x509.ObjectIdentifier,
        san: x509.SubjectAlternativeName | None = None,
    ) -> None:
        ca_key = serialization.load_pem_private_key((self.directory / "ca.key").read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        _write_key(key_path, key)
        cert_path.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))

    def device(self, device_id: str) -> TlsIdentity:
        """The device's client certificate (subject CN = device id), made on first use."""
        cert = self.directory / "devices" / f"{device_id}.pem"
        key = cert.with_suffix(".key")
        if not cert.exists():
            self._issue(device_id, cert, key, ExtendedKeyUsageOID.CLIENT_AUTH)
        return TlsIdentity(self.ca_cert, cert, key)
