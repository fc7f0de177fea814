"""The lab's LDAP: a private slapd holding an AliEn-like tree with a site's CE entries.

Preparing and running are separate on purpose. ``prepare_slapd`` writes everything into a work
directory (schema, slapd.conf, TLS certificates, the database loaded offline with slapadd, the
password files of two accounts) and returns a ``SlapdSpec``; the caller runs ``spec.argv``
itself, possibly prefixed by ``ip netns exec NS``, and calls ``spec.wait_ready()``.
``start_slapd``/``stop_slapd`` are the convenience for tests on loopback.

The tree::

    o=alice,dc=cern,dc=ch
      ou=People      cn=admin (may write installMethod of the site's CEs), cn=reader (reads)
      ou=Sites
        ou=<SITE>,ou=Sites   ou=Services  ou=CE  name=<CE> ...   (objectClass AliEnCE)
        ou=OTHERSITE         a CE of another site, which the admin may not change

Schema choice: ``installMethod`` is ``SUP name`` (case-insensitive matching, like the real
AliEn LDAP) and deliberately NOT single-valued. The central LDAP does not promise a single
value, so the client must not rely on the server to refuse a second one; siteadmin's
compare-and-set (delete old + add new, assertion control when absent) is tested against this.

Simple binds need TLS (``security simple_bind=128``) unless ``require_tls=False``; anonymous
reads are allowed, as on the real ALICE LDAP. No secret is ever in argv: passwords live in 0600
files and the database holds only salted SHA hashes.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from siteadmin.directory import ce_container, ce_dn, ldif_line
from siteadmin.errors import LabError
from siteadmin.lab.tls import make_ca, make_server_cert
from siteadmin.secrets import generate_secret, write_secret_file

BASE = "o=alice,dc=cern,dc=ch"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
OID_ARC = "2.25.184109727986683630429826199753641237423"
"""A private UUID-based OID arc (RFC 4122 / X.667), needs no registration."""

OTHER_SITE = "OTHERSITE"

DEFAULT_CES: list[tuple[str, str | None, str]] = [
    ("CE1", "CVMFS", "ce1.lab.example"),
    ("CE2", "Torrent", "ce2.lab.example"),
    ("CE3", None, "ce3.lab.example"),
    ("CE4", "Parrot", "ce4.lab.example"),
]
"""(name, installMethod or None, host) of the CEs a lab site gets when none are given."""

SCHEMA = f"""\
# AliEn-like schema for the siteadmin lab (not the official AliEn schema).
objectIdentifier AliEnLab {OID_ARC}
objectIdentifier AliEnAttr AliEnLab:1
objectIdentifier AliEnClass AliEnLab:2

attributetype ( AliEnAttr:1 NAME 'type'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{{256}} )
attributetype ( AliEnAttr:2 NAME 'installMethod'
  DESC 'how AliEn installs packages on this CE: Torrent, CVMFS, ... (AliEn reads it case-sensitively)'
  SUP name )
attributetype ( AliEnAttr:3 NAME 'maxqueuedjobs'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( AliEnAttr:4 NAME 'maxjobs'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( AliEnAttr:5 NAME 'packages'
  EQUALITY caseExactMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( AliEnAttr:6 NAME 'environment'
  EQUALITY caseExactMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )

objectclass ( AliEnClass:1 NAME 'AliEnCE'
  DESC 'an AliEn computing element'
  SUP top STRUCTURAL
  MUST ( name $ type $ host $ maxqueuedjobs )
  MAY ( installMethod $ maxjobs $ packages $ environment $ description ) )
"""


@dataclasses.dataclass(frozen=True)
class SlapdSpec:
    """Everything needed to run and use one prepared lab slapd.

    ``argv`` runs slapd in the foreground (``-d 0``) and holds no secret.
    """

    argv: tuple[str, ...]
    workdir: Path
    listen_host: str
    ldap_port: int
    ldaps_port: int
    ldap_url: str
    ldaps_url: str
    ca_file: Path
    admin_dn: str
    admin_password_file: Path
    reader_dn: str
    reader_password_file: Path
    base: str
    site_name: str
    ces: tuple[tuple[str, str | None, str], ...]
    """The CEs loaded into the site, as (name, installMethod or None, host)."""

    def ce_dn(self, name: str, site: str | None = None) -> str:
        """The DN of a CE entry of this lab (escaped)."""
        return ce_dn(name, site or self.site_name, self.base)

    def wait_ready(self, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> float:
        """Poll until slapd answers an anonymous bind on the plain port.

        Args:
            timeout: seconds to wait at most.
            proc: the running slapd, to report its early exit instead of waiting in vain.

        Returns:
            Seconds it took.

        Raises:
            LabError: slapd exited or did not answer within timeout.
        """
        import ldap3

        start = time.monotonic()
        while True:
            if proc is not None and proc.poll() is not None:
                raise LabError(f"slapd exited with status {proc.returncode} before answering", f"run `slaptest -u -f {self.workdir / 'slapd.conf'}`")
            conn = ldap3.Connection(
                ldap3.Server(self.listen_host, port=self.ldap_port, get_info=ldap3.NONE, connect_timeout=0.5),
                receive_timeout=1, raise_exceptions=False,
            )
            try:
                conn.open()
                if conn.bind():
                    return time.monotonic() - start
            except ldap3.core.exceptions.LDAPException:
                pass
            finally:
                conn.unbind()
                if conn.socket is not None:  # ldap3 leaves the socket of a refused connect open
                    conn.socket.close()
            if time.monotonic() - start > timeout:
                raise LabError(f"slapd on {self.listen_host}:{self.ldap_port} did not answer within {timeout:.1f} s")
            time.sleep(0.015)


def ssha(password: str) -> str:
    """A salted SHA-1 userPassword value ({SSHA}), as slappasswd makes, without putting the secret in argv."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()  # noqa: S324 - slapd's {SSHA} scheme
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _entry(dn: str, attrs: list[tuple[str, str]]) -> str:
    return "\n".join([ldif_line("dn", dn), *(ldif_line(a, v) for a, v in attrs)]) + "\n"


def _account(dn: str, cn: str, password_hash: str) -> str:
    return _entry(dn, [("objectClass", "organizationalRole"), ("objectClass", "simpleSecurityObject"), ("cn", cn), ("userPassword", password_hash)])


def _tree_ldif(site: str, ces: list[tuple[str, str | None, str]], admin_hash: str, reader_hash: str, base: str) -> str:
    entries = [
        _entry(base, [("objectClass", "organization"), ("o", "alice")]),
        _entry(f"ou=People,{base}", [("objectClass", "organizationalUnit"), ("ou", "People")]),
        _account(f"cn=admin,ou=People,{base}", "admin", admin_hash),
        _account(f"cn=reader,ou=People,{base}", "reader", reader_hash),
        _entry(f"ou=Sites,{base}", [("objectClass", "organizationalUnit"), ("ou", "Sites")]),
    ]
    sites: list[tuple[str, list[tuple[str, str | None, str]]]] = [(site, ces)]
    if site != OTHER_SITE:
        sites.append((OTHER_SITE, [("CE1", "CVMFS", "ce1.other.example")]))
    for name, site_ces in sites:
        container = ce_container(name, base)
        services = container.split(",", 1)[1]
        site_dn = services.split(",", 1)[1]
        entries.append(_entry(site_dn, [("objectClass", "organizationalUnit"), ("ou", name)]))
        entries.append(_entry(services, [("objectClass", "organizationalUnit"), ("ou", "Services")]))
        entries.append(_entry(container, [("objectClass", "organizationalUnit"), ("ou", "CE")]))
        for ce, method, host in site_ces:
            attrs = [("objectClass", "AliEnCE"), ("name", ce), ("type", "LCG"), ("host", host), ("maxqueuedjobs", "100"), ("maxjobs", "1000")]
            if method is not None:
                attrs.append(("installMethod", method))
            attrs.append(("environment", "ALIEN_SITE=" + name))
            entries.append(_entry(ce_dn(ce, name, base), attrs))
    return "\n".join(entries)


def _slapd_conf(
    workdir: Path, site: str, base: str, cert: Path, key: Path, ca: Path, require_tls: bool,
    extra_global: Sequence[str] = (), extra_conf: Sequence[str] = (),
) -> str:
    admin = f"cn=admin,ou=People,{base}"
    lines = [
        f"include {SCHEMA_DIR / 'core.schema'}",
        f"include {SCHEMA_DIR / 'cosine.schema'}",
        f"include {workdir / 'alien.schema'}",
        f"pidfile {workdir / 'slapd.pid'}",
        f"argsfile {workdir / 'slapd.args'}",
        f"modulepath {MODULE_DIR}",
        "moduleload back_mdb",
        f"TLSCACertificateFile {ca}",
        f"TLSCertificateFile {cert}",
        f"TLSCertificateKeyFile {key}",
    ]
    if require_tls:
        lines.append("security simple_bind=128")
    lines += list(extra_global)
    lines += [
        "",
        "database mdb",
        f'suffix "{base}"',
        f"directory {workdir / 'db'}",
        "maxsize 16777216",
        "",
        "# Only the admin may change installMethod, and only of this site's CEs.",
        f'access to dn.subtree="{ce_container(site, base)}" attrs=installMethod',
        f'  by dn.exact="{admin}" write',
        "  by * read",
        "access to attrs=userPassword",
        "  by anonymous auth",
        "  by * none",
        "access to *",
        "  by * read",
        "",
        *extra_conf,
        "",
    ]
    return "\n".join(lines)


def _run(argv: list[str], what: str) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{what} could not run: {exc}") from None
    if proc.returncode != 0:
        tail = " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:]) or "no message"
        raise LabError(f"{what} failed (exit {proc.returncode}): {tail}")


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def prepare_slapd(
    workdir: Path,
    *,
    site_name: str,
    listen_host: str,
    ldap_port: int,
    ldaps_port: int,
    server_names: list[str],
    ces: list[tuple[str, str | None, str]] | None = None,
    require_tls: bool = True,
    extra_global: Sequence[str] = (),
    extra_conf: Sequence[str] = (),
) -> SlapdSpec:
    """Write a ready-to-run slapd into workdir: config, schema, certificates, loaded database, passwords.

    Args:
        workdir: an empty or new directory owned by this slapd (one per run: two slapd on one db both start).
        site_name: the site whose CEs are created (``ou=<site_name>,ou=Sites,...``).
        listen_host: address slapd listens on; also the host of ``ldap_url``/``ldaps_url`` and
            always a SAN of the server certificate.
        ldap_port: plain LDAP port (StartTLS offered).
        ldaps_port: LDAPS port.
        server_names: further names and addresses the server certificate is valid for, e.g. ``["localhost"]``.
        ces: (name, installMethod or None, host) per CE; ``DEFAULT_CES`` when None.
        require_tls: refuse simple binds without TLS (``security simple_bind=128``).
        extra_global: further global slapd.conf lines (before the database), e.g.
            ``disallow bind_simple`` for a server that wants SASL binds only.
        extra_conf: further lines after the site's database, e.g. another database.

    Returns:
        The SlapdSpec to run and reach it.

    Raises:
        LabError: a tool (openssl, slaptest, slapadd) failed or the CE list is bad.
    """
    ce_list = list(DEFAULT_CES if ces is None else ces)
    if len({name.casefold() for name, _, _ in ce_list}) != len(ce_list):
        raise LabError("CE names must be unique (LDAP compares them case-insensitively)")
    if any(not name for name, _, _ in ce_list):
        raise LabError("CE names must not be empty")
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = workdir / "db"
    if db.exists():
        shutil.rmtree(db)
    db.mkdir(mode=0o700)

    names = list(dict.fromkeys([*server_names, listen_host]))
    ca = make_ca(workdir / "tls")
    server = make_server_cert(workdir / "tls", ca, names, stem="slapd")

    secrets_dir = workdir / "secrets"
    admin_pw_file = secrets_dir / "admin.password"
    reader_pw_file = secrets_dir / "reader.password"
    admin_pw = generate_secret()
    reader_pw = generate_secret()
    write_secret_file(admin_pw_file, admin_pw)
    write_secret_file(reader_pw_file, reader_pw)

    (workdir / "alien.schema").write_text(SCHEMA, encoding="utf-8")
    conf = workdir / "slapd.conf"
    conf.write_text(_slapd_conf(workdir, site_name, BASE, server.cert, server.key, ca.cert, require_tls, extra_global, extra_conf), encoding="utf-8")
    data = workdir / "tree.ldif"
    data.write_text(_tree_ldif(site_name, ce_list, ssha(admin_pw), ssha(reader_pw), BASE), encoding="utf-8")
    _run([_tool("slaptest"), "-u", "-f", str(conf)], "slaptest")
    _run([_tool("slapadd"), "-q", "-f", str(conf), "-l", str(data)], "slapadd")

    host = _url_host(listen_host)
    ldap_url = f"ldap://{host}:{ldap_port}"
    ldaps_url = f"ldaps://{host}:{ldaps_port}"
    argv = (_tool("slapd"), "-f", str(conf), "-h", f"{ldap_url}/ {ldaps_url}/", "-d", "0")
    return SlapdSpec(
        argv=argv,
        workdir=workdir,
        listen_host=listen_host,
        ldap_port=ldap_port,
        ldaps_port=ldaps_port,
        ldap_url=ldap_url,
        ldaps_url=ldaps_url,
        ca_file=ca.cert,
        admin_dn=f"cn=admin,ou=People,{BASE}",
        admin_password_file=admin_pw_file,
        reader_dn=f"cn=reader,ou=People,{BASE}",
        reader_password_file=reader_pw_file,
        base=BASE,
        site_name=site_name,
        ces=tuple(ce_list),
    )


def start_slapd(spec: SlapdSpec, timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """Run spec.argv on this host and wait until it answers (tests on loopback).

    Raises:
        LabError: slapd could not start or did not answer in time (it is stopped then).
    """
    log = open(spec.workdir / "slapd.log", "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        proc = subprocess.Popen(spec.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise LabError(f"slapd could not run: {exc}") from None
    finally:
        log.close()
    try:
        spec.wait_ready(timeout, proc)
    except LabError:
        stop_slapd(proc)
        raise
    return proc


def stop_slapd(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Stop a slapd from start_slapd: SIGTERM, then SIGKILL after timeout; always reaps it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    else:
        proc.wait()
