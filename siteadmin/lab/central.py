"""The lab's central services ("cern"): the package, its torrent, opentracker, the seeder, HTTP.

* package: a deterministic ``.tar.bz2`` of pseudo-random data, cached in the lab's cache dir
  across runs (making 30 MB takes seconds; ``lab down`` keeps it).
* torrent: ``mktorrent -l 18`` (256 KiB pieces), never ``-p`` (private torrents switch off
  LPD, PEX and DHT), announcing to the lab tracker.
* tracker: the Debian opentracker is whitelist-only: the infohashes go to ``whitelist`` in
  its chroot dir (``-d``; ``-w`` is relative to it).
* seeder: aria2c checking (-V) and seeding the cached package forever (seed-ratio 0); its
  RPC secret is in its 0600 conf file, never in argv.
* HTTP fallback: ``python -m http.server`` serving the torrents and the tarballs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path

from siteadmin.errors import LabError
from siteadmin.lab import bencode
from siteadmin.secrets import generate_secret, write_private_file

PACKAGE_VERSION = "v1"


def package_name(size_mb: int) -> str:
    return f"alice-lab-package-{PACKAGE_VERSION}-{size_mb}M.tar.bz2"


def make_package(cache_dir: Path, size_mb: int) -> Path:
    """The cached package tarball of about ``size_mb`` MB, made when missing.

    The content is pseudo-random with a fixed seed, so every lab has the same bytes and SHA1.

    Raises:
        LabError: when the tarball cannot be written.
    """
    path = cache_dir / package_name(size_mb)
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    rng = random.Random(f"alice-lab-{size_mb}")  # noqa: S311 - test data, not crypto
    try:
        with tarfile.open(tmp, "w:bz2", compresslevel=1) as tar:
            readme = f"ALICE lab package {PACKAGE_VERSION}, {size_mb} MB of test data\n".encode()
            _add(tar, "VO_ALICE@lab::package/README", readme)
            chunk = 4 << 20
            remaining = size_mb << 20
            part = 0
            while remaining > 0:
                size = min(chunk, remaining)
                _add(tar, f"VO_ALICE@lab::package/lib/part{part:03d}.so", rng.randbytes(size))
                remaining -= size
                part += 1
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LabError(f"{path}: cannot write the package: {exc.strerror}") from None
    return path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def sha1_file(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_torrent(package: Path, out: Path, announce: str) -> Path:
    """Write ``out`` (.torrent of ``package``, 256 KiB pieces, public) announcing to ``announce``.

    Raises:
        LabError: when mktorrent fails.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    proc = subprocess.run(
        ["mktorrent", "-l", "18", "-a", announce, "-c", "ALICE lab package", "-o", str(out), str(package)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if proc.returncode != 0:
        raise LabError(f"mktorrent failed: {proc.stderr.strip()[-200:]}")
    return out


def infohash(torrent: Path) -> str:
    """Hex SHA1 of the bencoded info dictionary of a .torrent."""
    meta = bencode.decode(torrent.read_bytes())
    return hashlib.sha1(bencode.encode(meta[b"info"]), usedforsecurity=False).hexdigest()


@dataclasses.dataclass(frozen=True)
class CentralLayout:
    """Where the central services listen and keep their files."""

    host: str
    tracker_port: int
    seeder_port: int
    seeder_rpc_port: int
    http_port: int
    dir: Path

    @property
    def announce(self) -> str:
        return f"http://{self.host}:{self.tracker_port}/announce"

    @property
    def http_base(self) -> str:
        return f"http://{self.host}:{self.http_port}/"

    @property
    def www(self) -> Path:
        return self.dir / "www"

    @property
    def tracker_dir(self) -> Path:
        return self.dir / "tracker"


def publish(layout: CentralLayout, package: Path, torrent: Path) -> None:
    """Put the tarball and the torrent in the HTTP root and the infohash on the tracker whitelist."""
    layout.www.mkdir(parents=True, exist_ok=True)
    for item in (package, torrent):
        link = layout.www / item.name
        link.unlink(missing_ok=True)
        link.symlink_to(item.resolve())
    layout.tracker_dir.mkdir(parents=True, exist_ok=True)
    layout.tracker_dir.chmod(0o755)
    whitelist = layout.tracker_dir / "whitelist"
    whitelist.write_text(infohash(torrent) + "\n")
    whitelist.chmod(0o644)


def tracker_argv(layout: CentralLayout) -> list[str]:
    return [
        "opentracker", "-i", layout.host, "-p", str(layout.tracker_port), "-P", str(layout.tracker_port),
        "-d", str(layout.tracker_dir), "-w", "whitelist",
    ]


def http_argv(layout: CentralLayout) -> list[str]:
    return [sys.executable, "-m", "http.server", str(layout.http_port), "--bind", layout.host, "--directory", str(layout.www)]


def seeder_conf(layout: CentralLayout, package: Path, loopback: bool) -> Path:
    """Write the seeder's 0600 conf (with its RPC secret) and return its path."""
    secret = generate_secret()
    lines = [
        f"dir={package.parent}",
        "check-integrity=true",
        "seed-ratio=0.0",
        f"listen-port={layout.seeder_port}",
        "enable-dht=false",
        "bt-enable-lpd=false",
        "enable-peer-exchange=true",
        "enable-rpc=true",
        "rpc-listen-all=false",
        f"rpc-listen-port={layout.seeder_rpc_port}",
        f"rpc-secret={secret}",
        f"dht-file-path={layout.dir / 'seeder-dht.dat'}",
        "bt-save-metadata=false",
        "auto-save-interval=0",
        "file-allocation=none",
        "console-log-level=warn",
        "summary-interval=0",
        "show-console-readout=false",
    ]
    if loopback:
        lines.append(f"interface={layout.host}")
    path = layout.dir / "seeder.conf"
    write_private_file(path, "\n".join(lines) + "\n")
    write_private_file(layout.dir / "seeder-rpc-secret", secret + "\n")
    return path


def seeder_argv(conf: Path, torrent: Path) -> list[str]:
    return ["aria2c", f"--conf-path={conf}", str(torrent)]
