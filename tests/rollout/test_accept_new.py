"""``--accept-new`` on the lab's real sshd: an unknown key is written and audited; a changed key fails the WN and nothing is written."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import paramiko
import pytest

from siteadmin import audit
from siteadmin.cli import main
from siteadmin.lab import Lab
from siteadmin.remote import SessionPool
from siteadmin.remote.knownhosts import known_hosts_name
from siteadmin.site import load_site

pytestmark = pytest.mark.lab


def run_cli(*argv: str) -> tuple[int, Any, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--json", *argv], out=out, err=err)
    return code, json.loads(out.getvalue()) if out.getvalue().strip() else None, err.getvalue()


def with_known_hosts(lab: Lab, name: str, known: Path) -> Path:
    """The lab's site.toml beside it, with ssh.known_hosts pointing at ``known``."""
    text = lab.site_path.read_text(encoding="utf-8")
    text, count = re.subn(r'(?m)^known_hosts = ".*"$', f'known_hosts = "{known}"', text)
    assert count == 1
    path = lab.site_path.parent / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    os.chmod(path, 0o600)
    return path


def test_unknown_keys_fail_without_accept_new_and_are_written_and_audited_with_it(lab: Lab, tmp_path: Path) -> None:
    known = lab.site_path.parent / "known_hosts.accept-new"
    known.unlink(missing_ok=True)
    site_path = with_known_hosts(lab, "accept-new", known)
    audit_path = load_site(site_path).audit.path
    seen = len(audit.read(audit_path)) if audit_path.exists() else 0

    code, data, err = run_cli("--site", str(site_path), "apply", "--dry-run")
    assert code == 1
    assert {h["outcome"] for h in data["hosts"]} == {"host key unknown"}
    assert not known.exists()

    code, data, err = run_cli("--site", str(site_path), "apply", "--dry-run", "--accept-new")
    assert code == 0, err
    lines = known.read_text(encoding="ascii").splitlines()
    assert len(lines) == len(lab.wn_names)
    assert oct(known.stat().st_mode & 0o777) == "0o600"
    events = [r.event for r in audit.read(audit_path)[seen:] if r.event and r.event.get("action") == "hostkey.accept-new"]
    assert sorted(e["host"] for e in events) == sorted(lab.wn_names)
    assert all(e["fingerprint"] and e["known_hosts"] == str(known) for e in events)

    # the keys now known, a run without --accept-new connects and writes nothing more
    code, data, err = run_cli("--site", str(site_path), "apply", "--dry-run")
    assert code == 0, err
    assert known.read_text(encoding="ascii").splitlines() == lines


def test_a_changed_key_fails_that_wn_loudly_and_nothing_is_written(lab: Lab) -> None:
    known = lab.site_path.parent / "known_hosts.changed"
    host = lab.wn_names[0]
    impostor = paramiko.ECDSAKey.generate()
    # a known_hosts holding another key for every name the WN is looked up under
    with SessionPool(load_site(lab.site_path)) as pool:
        target = pool.target(host)
    text = "".join(f"{known_hosts_name(name, target.port)} {impostor.get_name()} {impostor.get_base64()}\n" for name in target.key_names)
    known.write_text(text, encoding="ascii")
    os.chmod(known, 0o600)
    site_path = with_known_hosts(lab, "changed-key", known)

    code, data, err = run_cli("--site", str(site_path), "apply", "--dry-run", "--accept-new", host)
    assert code == 1
    assert data["hosts"][0]["outcome"] == "HOST KEY CHANGED"
    assert "HOST KEY CHANGED" in err
    assert known.read_text(encoding="ascii") == text
