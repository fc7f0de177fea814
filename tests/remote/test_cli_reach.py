"""``siteadmin reach`` through siteadmin.cli.main against real sshd."""

from __future__ import annotations

import json
import socket
from io import StringIO
from pathlib import Path
from typing import Any

from siteadmin.cli import main
from siteadmin.lab.sshd import known_hosts_line


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_reach_all_ok(ssh_lab: Any) -> None:
    code, out, err = _run("reach", "--site", str(ssh_lab.site_path))
    assert code == 0
    assert out == "wn[001-003].lab: ok\n"
    assert err.startswith("siteadmin: all 3 WNs reached in ")
    assert err.count("\n") == 1


def test_reach_pattern_selects(ssh_lab: Any) -> None:
    code, out, _ = _run("reach", "wn002.lab", "--site", str(ssh_lab.site_path))
    assert (code, out) == (0, "wn002.lab: ok\n")


def _mixed_site(ssh_lab: Any, tmp_path: Path) -> Path:
    good, other = ssh_lab.spec("wn001.lab"), ssh_lab.spec("wn002.lab")
    down = ssh_lab.free_port()
    known = tmp_path / "known_hosts"
    known.write_text(
        known_hosts_line(["127.0.0.1"], good.port, good.host_key_pub_line)
        + "\n"
        + known_hosts_line(["wn003.lab"], other.port, good.host_key_pub_line)  # not wn002's key
        + "\n"
    )
    nodes = {"wn001.lab": good.port, "wn002.lab": good.port, "wn003.lab": other.port, "wn004.lab": down, "wn005.lab": ssh_lab.spec("wn003.lab").port}
    return ssh_lab.write_site("mixed", nodes, known_hosts=known)  # type: ignore[no-any-return]


def test_reach_failures_exit_1_with_one_line_each(ssh_lab: Any, tmp_path: Path) -> None:
    site = _mixed_site(ssh_lab, tmp_path)
    code, out, err = _run("reach", "--site", str(site), "--parallel", "2")
    assert code == 1
    assert out.splitlines() == [
        "wn[001-002].lab: ok",
        "wn003.lab: HOST KEY CHANGED",
        "wn004.lab: connection refused",
        "wn005.lab: host key unknown",
    ]
    lines = err.splitlines()
    assert "Traceback" not in err
    assert len(lines) == 4
    assert lines[0].startswith("siteadmin: hostkey: wn003.lab: HOST KEY CHANGED for [wn003.lab]:")
    assert lines[1].startswith("siteadmin: unreachable: wn004.lab: connection refused by 127.0.0.1:")
    assert lines[2].startswith("siteadmin: hostkey: wn005.lab: host key not in known_hosts ")
    assert lines[3].startswith("siteadmin: 3 of 5 WNs not reached (wn[003-005].lab) in ")


def test_reach_json(ssh_lab: Any, tmp_path: Path) -> None:
    code, out, _ = _run("reach", "--site", str(_mixed_site(ssh_lab, tmp_path)), "--json")
    assert code == 1
    data = json.loads(out)
    assert (data["count"], data["ok"], data["failed"]) == (5, 2, 3)
    assert data["summary"][0] == {"hosts": "wn[001-002].lab", "outcome": "ok"}
    by_host = {h["host"]: h for h in data["hosts"]}
    assert list(by_host) == [f"wn00{i}.lab" for i in range(1, 6)]
    assert by_host["wn001.lab"]["uname"] == socket.gethostname()
    assert by_host["wn001.lab"]["error"] is None
    assert by_host["wn004.lab"]["outcome"] == "connection refused"
    assert by_host["wn004.lab"]["category"] == "unreachable"
    assert by_host["wn004.lab"]["error"].startswith("wn004.lab: connection refused by 127.0.0.1:")


def test_reach_unknown_host_is_a_usage_error(ssh_lab: Any) -> None:
    code, out, err = _run("reach", "wn999.lab", "--site", str(ssh_lab.site_path))
    assert code == 2
    assert out == ""
    assert err == "siteadmin: hosts: wn999.lab: not a WN of this site (see `siteadmin hosts` for the site's WNs)\n"


def test_reach_parallel_must_be_positive(ssh_lab: Any) -> None:
    code, out, err = _run("reach", "--parallel", "0", "--site", str(ssh_lab.site_path))
    assert (code, out, err) == (2, "", "siteadmin: usage: --parallel 0: must be 1 or more\n")
