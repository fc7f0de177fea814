"""The parallel-ssh peer of the rollout benchmark, run by the peers' venv (not siteadmin's).

Usage: python _rollout_pssh.py HOSTS.json TEMPLATE GENERATION PARALLEL RENDER_DIR

One client for all WNs (its connections are reused between the steps, as the library intends):
hash each WN's file with ``sha256sum``, render the profile for the WNs whose hash differs, copy
it over SFTP to a temp file beside the target, then ``chmod 600`` and ``mv`` it into place.
parallel-ssh checks no host keys.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path

from pssh.clients import ParallelSSHClient  # type: ignore[import-not-found]  # lives in the peers' venv only


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    template = Path(argv[2]).read_text(encoding="utf-8")
    generation = argv[3]
    parallel = int(argv[4])
    render_dir = Path(argv[5])
    render_dir.mkdir(parents=True, exist_ok=True)
    hosts = spec["hosts"]
    client = ParallelSSHClient(
        [h["address"] for h in hosts], user=spec["user"], pkey=spec["key"], port=hosts[0]["port"], pool_size=parallel, num_retries=1, timeout=30
    )
    wanted = {}
    for h in hosts:
        text = template.replace("{{ wn }}", h["wn"]).replace("{{ generation }}", generation)
        wanted[h["address"]] = text.encode("utf-8")
    output = client.run_command("sha256sum -- %s 2>/dev/null || true", host_args=[(shlex.quote(h["path"]),) for h in hosts])
    client.join(output)
    todo = []
    for h, out in zip(hosts, output, strict=True):
        if out.exception is not None:
            raise SystemExit(f"{h['wn']}: {out.exception}")
        current = "".join(out.stdout).split(" ")[0].strip()
        if current != hashlib.sha256(wanted[h["address"]]).hexdigest():
            todo.append(h)
    if not todo:
        return 0
    for h in todo:
        (render_dir / h["wn"]).write_bytes(wanted[h["address"]])
    sub = ParallelSSHClient(
        [h["address"] for h in todo], user=spec["user"], pkey=spec["key"], port=hosts[0]["port"], pool_size=parallel, num_retries=1, timeout=30
    )
    args = [{"local": str(render_dir / h["wn"]), "temp": h["path"] + ".pssh-tmp"} for h in todo]
    greenlets = sub.copy_file("%(local)s", "%(temp)s", copy_args=args)
    sub.pool.join()
    for g in greenlets:
        g.get()
    moves = [(shlex.quote(a["temp"]), shlex.quote(h["path"])) for a, h in zip(args, todo, strict=True)]
    output = sub.run_command("chmod 600 -- %s && mv -f -- %s %s", host_args=[(t, t, p) for t, p in moves])
    sub.join(output)
    failed = [h["wn"] for h, out in zip(todo, output, strict=True) if out.exception is not None or out.exit_code != 0]
    if failed:
        raise SystemExit(f"moving the profile failed on {len(failed)} WNs, first {failed[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
