"""A throwaway certificate authority and server certificates for the lab, made with the openssl CLI.

Keys are EC P-256 (a whole lab bootstrap takes ~0.1 s; RSA would take ~0.7 s). Key files are
created 0600 before openssl writes into them, so no key is ever readable by others. Server
certificates carry every given name as a SAN: ``DNS:`` for names, ``IP:`` for addresses, so
clients can connect by ``localhost`` or by ``127.0.0.1`` and still verify the name.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import subprocess
from pathlib import Path

from siteadmin.errors import LabError

DAYS = 30


@dataclasses.dataclass(frozen=True)
class CertPair:
    """A certificate and its private key (PEM files)."""

    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    try:
        proc = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"openssl {args[0]} could not run: {exc}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise LabError(f"openssl {args[0]} failed (exit {proc.returncode}): {last}")


def _private_file(path: Path) -> Path:
    """Create an empty 0600 file so openssl writes the key into a file nobody else can read."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    return path


def san_entries(names: list[str]) -> list[str]:
    """subjectAltName entries for names: ``IP:`` for IP addresses, ``DNS:`` for host names.

    Raises:
        LabError: when names is empty.
    """
    if not names:
        raise LabError("a server certificate needs at least one name")
    out = []
    for name in names:
        try:
            ipaddress.ip_address(name)
            out.append(f"IP:{name}")
        except ValueError:
            out.append(f"DNS:{name}")
    return out


def make_ca(directory: Path, common_name: str = "siteadmin lab CA") -> CertPair:
    """Create a self-signed CA (``ca.crt``, ``ca.key``) in directory.

    Raises:
        LabError: when openssl fails.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = _private_file(directory / "ca.key")
    cert = directory / "ca.crt"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", str(DAYS), "-subj", f"/CN={common_name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )
    return CertPair(cert=cert, key=key)


def make_server_cert(directory: Path, ca: CertPair, names: list[str], stem: str = "server") -> CertPair:
    """Create a server key and a certificate signed by ca, valid for every name in names.

    Args:
        directory: where ``<stem>.crt`` and ``<stem>.key`` go.
        ca: the signing CA from make_ca.
        names: host names and IP addresses the certificate is valid for; the first is the CN.
        stem: file name stem.

    Returns:
        The certificate and key paths.

    Raises:
        LabError: when names is empty or openssl fails.
    """
    sans = ",".join(san_entries(names))
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = _private_file(directory / f"{stem}.key")
    csr = directory / f"{stem}.csr"
    cert = directory / f"{stem}.crt"
    ext = directory / f"{stem}.ext"
    ext.write_text(
        f"subjectAltName={sans}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        encoding="utf-8",
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={names[0]}",
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
        "-days", str(DAYS), "-out", str(cert), "-extfile", str(ext),
    )
    csr.unlink(missing_ok=True)
    return CertPair(cert=cert, key=key)
