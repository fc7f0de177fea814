"""Fan-out on the WN service against real sshd: a healthy group, a changed key, an unknown key and a stopped sshd."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from siteadmin.inventory import Inventory
from siteadmin.lab.sshd import known_hosts_line, prepare_sshd, start_sshd, stop_sshd
from siteadmin.remote import ConnectFailed, HostKeyChanged, HostKeyUnknown, Progress, WNService, summarise

pytestmark = pytest.mark.lab


def test_fanout_gives_every_host_its_own_result_and_folds(ssh_lab: Any, tmp_path: Path) -> None:
    good, other, unknown = ssh_lab.spec("wn001.lab"), ssh_lab.spec("wn002.lab"), ssh_lab.spec("wn003.lab")
    # a fourth sshd, stopped before the fan-out: its port refuses connections
    gone = prepare_sshd(
        tmp_path / "wn007", name="wn007.lab", listen_host="127.0.0.1", port=ssh_lab.free_port(), authorized_keys=ssh_lab.authorized_keys
    )
    stop_sshd(start_sshd(gone))
    nodes = {
        **{f"wn00{i}.lab": good.port for i in range(1, 5)},
        "wn005.lab": other.port,
        "wn006.lab": unknown.port,
        "wn007.lab": gone.port,
        "wn008.lab": other.port,
    }
    known = tmp_path / "known_hosts"
    lines = [known_hosts_line([f"wn00{i}.lab"], good.port, good.host_key_pub_line) for i in range(1, 5)]
    lines.append(known_hosts_line(["wn005.lab"], other.port, good.host_key_pub_line))  # wrong key on record
    lines.append(known_hosts_line(["wn007.lab"], gone.port, gone.host_key_pub_line))
    lines.append(known_hosts_line(["wn008.lab"], other.port, other.host_key_pub_line))
    known.write_text("\n".join(lines) + "\n")
    site = ssh_lab.site(ssh_lab.write_site("fanout", nodes, known_hosts=known))
    seen: list[Progress[str]] = []
    hosts = Inventory(site).select("all")
    assert hosts == [f"wn00{i}.lab" for i in range(1, 9)]
    with WNService(site, global_known_hosts=()) as service:
        start = time.monotonic()
        results = service.run(hosts, lambda s: s.run("uname -n", check=True).stdout.strip(), parallelism=8, progress=seen.append)
        took = time.monotonic() - start
    assert [r.host for r in results] == hosts
    assert sorted(p.host for p in seen) == hosts
    assert [p.done for p in seen] == list(range(1, 9))
    assert {p.total for p in seen} == {8}
    assert [r.ok for r in results] == [True, True, True, True, False, False, False, True]
    assert {r.value for r in results if r.ok} == {socket.gethostname()}
    errors = {r.host: r.error for r in results if not r.ok}
    assert errors["wn005.lab"] is not None and errors["wn005.lab"].startswith(f"wn005.lab: HOST KEY CHANGED for [wn005.lab]:{other.port}")
    assert errors["wn006.lab"] is not None and errors["wn006.lab"].startswith("wn006.lab: host key not in known_hosts")
    assert errors["wn007.lab"] is not None and errors["wn007.lab"].startswith(f"wn007.lab: connection refused by 127.0.0.1:{gone.port}")
    assert all("\n" not in (e or "") for e in errors.values())
    # the exception object is kept beside its text
    kinds = {r.host: type(r.exception) for r in results if not r.ok}
    assert kinds == {"wn005.lab": HostKeyChanged, "wn006.lab": HostKeyUnknown, "wn007.lab": ConnectFailed}
    assert summarise(results) == [
        ("wn[001-004,008].lab", "ok"),
        ("wn005.lab", "HOST KEY CHANGED"),
        ("wn006.lab", "host key unknown"),
        ("wn007.lab", "connection refused"),
    ]
    assert all(r.elapsed > 0 for r in results)
    assert took < 5
