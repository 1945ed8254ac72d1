"""Throw-away certificates for the API's TLS (``cryptography``): CAs, server and client
certificates, expired ones, written as PEM files with the modes an operator would use.  The lab's
engines serve their API with them (lab/build.py), and the TLS tests make theirs here."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = datetime.timedelta(days=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class Issued:
    cert: Path
    key: Path


@dataclass
class Ca:
    name: str
    cert_obj: x509.Certificate
    key_obj: ec.EllipticCurvePrivateKey
    cert: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def make_ca(directory: Path, name: str) -> Ca:
    """A self-signed CA (10 days), its certificate written to ``<directory>/<name>.pem`` (the key
    stays in memory: a lab or a test issues all its certificates at once)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(_name(name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(_now() - DAY).not_valid_after(_now() + 10 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Ca(name, cert, key, path)


def issue(ca: Ca, directory: Path, name: str, *, client: bool = False, expired: bool = False,
          hosts: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")) -> Issued:
    """A server (or ``client``) certificate ``ca`` signs, for ``hosts``; ``expired``: it ended
    yesterday."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    start, end = (now - 10 * DAY, now - DAY) if expired else (now - DAY, now + 5 * DAY)
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(ca.cert_obj.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if not client:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca.key_obj, hashes.SHA256())
    out = Issued(directory / f"{name}.crt", directory / f"{name}.key")
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(out.key, key)
    return out
