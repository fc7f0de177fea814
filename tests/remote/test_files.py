"""File steps against a real sshd as root: private temp file, validation, owner and mode kept, backups, restore, full and read-only disks.

The sshd of ``ssh_lab`` runs on this machine, so the tests look at the files it writes directly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siteadmin.remote import SessionPool
from siteadmin.remote.files import (
    FileState,
    FileStepError,
    backup,
    install,
    link_backup,
    list_backups,
    list_folder,
    read_file,
    remove_stale_temps,
    restore,
    staged,
    temp_name,
    validate,
    write_temp,
)
from siteadmin.remote.session import Session

pytestmark = pytest.mark.lab

NOBODY, NOGROUP = 65534, 65534
SECRET = b"rpc-secret=" + os.urandom(16).hex().encode() + b"\n"


@pytest.fixture
def session(ssh_lab: Any) -> Iterator[Session]:
    with SessionPool(ssh_lab.site()) as pool:
        yield pool.session("wn001.lab")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 KiB tmpfs of our own (we are root), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k,mode=0755", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _owner_mode(path: Path) -> tuple[int, int, str]:
    info = path.stat()
    return info.st_uid, info.st_gid, oct(stat.S_IMODE(info.st_mode))


def _existing(path: Path, data: bytes, uid: int = NOBODY, gid: int = NOGROUP, mode: int = 0o640) -> None:
    path.write_bytes(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _put(session: Session, path: Path, data: bytes, *, keep: int = 3, check: str | None = None) -> FileState:
    """The careful admin's order, as the rollout composes it."""
    current = read_file(session, str(path))
    with session.sftp() as sftp:
        backup(session, current, keep=keep, sftp=sftp)
        with staged(session, str(path), data, sftp=sftp) as temp:
            if check is not None:
                validate(session, temp, check, sftp=sftp)
            return install(session, temp, current, sftp=sftp)


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_read_gives_bytes_hash_owner_and_mode_and_absence_is_an_answer(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "aria2c.conf"
    assert read_file(session, str(path)) == FileState(str(path), None)
    _existing(path, SECRET + b"\x00\xff binary\n")
    state = read_file(session, str(path))
    assert state.data == SECRET + b"\x00\xff binary\n"
    assert state.sha256 == hashlib.sha256(state.data).hexdigest()
    assert (state.uid, state.gid, oct(state.mode or 0)) == (NOBODY, NOGROUP, oct(0o640))
    big = tmp_path / "big.conf"
    big.write_bytes(os.urandom(300_000))  # several reads, prefetched
    assert read_file(session, str(big)).data == big.read_bytes()


def test_read_refuses_a_symlink_or_a_directory(session: Session, tmp_path: Path) -> None:
    real = tmp_path / "real.conf"
    real.write_bytes(b"x=1\n")
    (tmp_path / "link.conf").symlink_to(real)
    for name, kind in (("link.conf", "a symlink"), (".", "a directory")):
        path = str(tmp_path / name) if name != "." else str(tmp_path)
        with pytest.raises(FileStepError) as info:
            read_file(session, path)
        assert info.value.one_line() == f"wn001.lab: cannot use {path}: it is {kind} (name the file itself)"
        assert info.value.outcome == "not a regular file"


def test_temp_file_is_0600_before_its_first_byte(session: Session, tmp_path: Path) -> None:
    # watch the directory while a large secret file is written; every sighting of the temp file,
    # empty or partial, must be private (the server's umask would give 0644)
    path = tmp_path / "aria2c.conf"
    data = SECRET + b"#" * (24 << 20)
    observed: set[tuple[str, int, int]] = set()
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 30
        while not done.is_set() and time.monotonic() < deadline:
            for entry in os.scandir(tmp_path):
                if entry.name.startswith(".aria2c.conf.siteadmin-"):
                    with contextlib.suppress(FileNotFoundError):
                        info = entry.stat(follow_symlinks=False)
                        observed.add((entry.name, stat.S_IMODE(info.st_mode), info.st_size))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        temp = write_temp(session, str(path), data)
    finally:
        done.set()
        watcher.join(5)
    partial = [(name, oct(mode), size) for name, mode, size in observed if size < len(data)]
    assert any(size < len(data) // 2 for _, _, size in partial), f"the temp file was never seen early ({len(observed)} sightings)"
    assert [row for row in partial if row[1] != oct(0o600)] == []
    # the temp file is in the target's own directory, holds all of it, and the target is not there yet
    assert Path(temp.path).parent == tmp_path and Path(temp.path).read_bytes() == data
    assert (temp.sha256, temp.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert _names(tmp_path) == [Path(temp.path).name]
    # a validation command sees it private too: 0600, owned by the SSH user
    validate(session, temp, "test \"$(stat -c '%a %U' {path})\" = '600 root'")
    install(session, temp, read_file(session, str(path)))
    assert _names(tmp_path) == ["aria2c.conf"]


def test_owner_group_and_mode_of_an_existing_file_are_kept(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "aria2c.conf"
    _existing(path, b"old=1\n" + SECRET)
    before = path.stat().st_ino
    state = _put(session, path, b"new=2\n" + SECRET, check="grep -q '^new=2$' {path}")
    assert path.read_bytes() == b"new=2\n" + SECRET
    assert _owner_mode(path) == (NOBODY, NOGROUP, oct(0o640))
    assert (state.uid, state.gid, state.mode) == (NOBODY, NOGROUP, 0o640)
    assert path.stat().st_ino != before  # replaced by rename, not rewritten in place
    (generation,) = list_backups(session, str(path))
    assert Path(generation.path).read_bytes() == b"old=1\n" + SECRET
    assert _owner_mode(Path(generation.path)) == (NOBODY, NOGROUP, oct(0o640))
    assert _names(tmp_path) == sorted(["aria2c.conf", Path(generation.path).name])  # no temp file left


def test_a_new_file_gets_0600_not_0644(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "aria2c.conf"
    assert _put(session, path, SECRET).mode == 0o600
    assert path.read_bytes() == SECRET
    assert _owner_mode(path) == (0, 0, oct(0o600))
    assert _names(tmp_path) == ["aria2c.conf"]  # nothing to back up, no temp file


def test_failed_validation_leaves_the_old_file_and_no_temp_file(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "aria2c.conf"
    _existing(path, b"old=1\n")
    with pytest.raises(FileStepError) as info:
        _put(session, path, b"bad=\n" + SECRET, check="echo checking; echo 'line 1: bad value' >&2; echo 'bad= is empty' >&2; exit 3 # {path}")
    assert (
        info.value.one_line()
        == f"wn001.lab: new {path} refused by `echo checking; echo 'line 1: bad value' >&2; echo 'bad= i...`: exit status 3: bad= is empty"
    )
    assert info.value.outcome == "validation failed"
    assert path.read_bytes() == b"old=1\n" and _owner_mode(path) == (NOBODY, NOGROUP, oct(0o640))
    assert [n for n in _names(tmp_path) if n.startswith(".")] == []


def test_validation_reason_hides_secrets_and_a_judge_can_accept_a_non_zero_exit(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "aria2c.conf"
    secret = SECRET.decode().strip().split("=", 1)[1]
    temp = write_temp(session, str(path), SECRET)
    with pytest.raises(FileStepError) as info:
        validate(session, temp, "sed -n 's/$/ rejected/p' {path} >&2; false", mask=[secret])
    assert secret not in info.value.one_line()
    assert info.value.one_line().endswith(": exit status 1: rpc-secret=******** rejected")
    assert _names(tmp_path) == []
    temp = write_temp(session, str(path), SECRET)
    # aria2c exits 1 on a good file: the caller's judge decides
    validate(session, temp, "echo 'Specify at least one URL.'; exit 1 # {path}", judge=lambda r: None if "at least one URL" in r.stdout else "no")
    install(session, temp, read_file(session, str(path)))
    assert path.read_bytes() == SECRET


def test_a_validation_command_without_the_path_runs_nothing_and_leaves_no_temp_file(session: Session, tmp_path: Path) -> None:
    temp = write_temp(session, str(tmp_path / "aria2c.conf"), SECRET)
    with pytest.raises(ValueError, match="must contain {path}"):
        validate(session, temp, "touch /tmp/should-not-run")
    assert _names(tmp_path) == []


def test_a_connection_cut_mid_upload_keeps_the_old_file_and_the_next_run_clears_the_temp_file(ssh_lab: Any, tmp_path: Path) -> None:
    path = tmp_path / "aria2c.conf"
    _existing(path, b"old=1\n")
    data = SECRET + b"#" * (64 << 20)
    with SessionPool(ssh_lab.site()) as pool:
        session = pool.session("wn001.lab")
        current = read_file(session, str(path))

        def cut() -> None:
            # as soon as the temp file has data, drop the connection under the writer
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                temps = [p for p in tmp_path.iterdir() if p.name.startswith(".aria2c.conf.siteadmin-")]
                if temps and temps[0].stat().st_size > 0:
                    break
                time.sleep(0.001)
            session.transport.sock.close()  # the TCP socket under the SSH transport

        cutter = threading.Thread(target=cut, daemon=True)
        cutter.start()
        with pytest.raises(FileStepError) as info:
            with staged(session, str(path), data) as temp:
                install(session, temp, current)
        cutter.join(5)
    assert info.value.outcome == "connection lost", info.value.one_line()
    assert info.value.one_line().startswith(f"wn001.lab: cannot write {path}: ")
    assert path.read_bytes() == b"old=1\n"
    # sshd may need a moment to notice; the next run (holding the WN's lock) clears what was left
    with SessionPool(ssh_lab.site()) as pool:
        session = pool.session("wn001.lab")
        (stale,) = remove_stale_temps(session, str(path))
        assert Path(stale).parent == tmp_path
        assert _names(tmp_path) == ["aria2c.conf"]
        _put(session, path, b"new=1\n")
    assert path.read_bytes() == b"new=1\n"


def test_validation_that_hangs_times_out_and_removes_the_temp_file(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "aria2c.conf"
    temp = write_temp(session, str(path), SECRET)
    started = time.monotonic()
    with pytest.raises(FileStepError) as info:
        validate(session, temp, "sleep 30 # {path}", timeout=1.0)
    assert time.monotonic() - started < 5
    assert info.value.outcome == "validation timed out"
    assert _names(tmp_path) == []


def test_staged_removes_the_temp_file_when_the_caller_gives_up(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "aria2c.conf"
    with pytest.raises(KeyboardInterrupt), staged(session, str(path), SECRET) as temp:
        assert Path(temp.path).exists()
        raise KeyboardInterrupt
    assert _names(tmp_path) == []


def test_backups_are_listed_newest_first_and_pruned_to_keep(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "aria2c.conf"
    _existing(path, b"v0\n", 0, 0, 0o600)
    (tmp_path / "aria2c.conf.bak").write_bytes(b"the admin's own\n")  # not ours: never listed or pruned
    (tmp_path / "other.conf.siteadmin-20261201T140915.123Z-0123456789ab").write_bytes(b"another file's\n")
    start = dt.datetime(2026, 12, 1, 14, 0, tzinfo=dt.UTC)
    for n in range(1, 5):
        current = read_file(session, str(path))
        made = backup(session, current, keep=2, now=start + dt.timedelta(minutes=n))
        assert made is not None and made.id.startswith(f"20261201T14{n:02d}00.000Z-")
        path.write_bytes(f"v{n}\n".encode())
    listed = list_backups(session, str(path))
    assert [b.id for b in listed] == [
        f"20261201T140400.000Z-{hashlib.sha256(b'v3' + bytes([10])).hexdigest()[:12]}",
        f"20261201T140300.000Z-{hashlib.sha256(b'v2' + bytes([10])).hexdigest()[:12]}",
    ]
    assert [Path(b.path).read_bytes() for b in listed] == [b"v3\n", b"v2\n"]
    assert [(b.size, b.mode, b.target, b.time.minute) for b in listed] == [(3, 0o600, str(path), 4), (3, 0o600, str(path), 3)]
    assert (tmp_path / "aria2c.conf.bak").exists() and (tmp_path / "other.conf.siteadmin-20261201T140915.123Z-0123456789ab").exists()
    assert len(_names(tmp_path)) == 5
    assert backup(session, FileState(str(path), None), keep=2) is None


def _put_linked(session: Session, path: Path, data: bytes, *, keep: int = 3) -> str | None:
    """The rollout's order: one listing, the new file staged, the backup linked right before the rename."""
    current = read_file(session, str(path))
    with session.sftp() as sftp:
        folder = list_folder(session, str(path), sftp=sftp)
        with staged(session, str(path), data, sftp=sftp) as temp:
            made = link_backup(session, current, folder, keep=keep, sftp=sftp)
            install(session, temp, current, sftp=sftp)
    return made.path if made is not None else None


def test_a_linked_backup_is_the_old_inode_byte_for_byte_with_owner_and_mode_and_pruned(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "aria2c.conf"
    original = SECRET + bytes(range(256))
    _existing(path, original)
    old_inode = path.stat().st_ino
    made = _put_linked(session, path, b"new=1\n", keep=2)
    assert made is not None
    saved = Path(made)
    assert saved.read_bytes() == original and _owner_mode(saved) == (NOBODY, NOGROUP, oct(0o640))
    assert saved.stat().st_ino == old_inode and saved.stat().st_nlink == 1, "the backup is not the old file itself"
    assert path.read_bytes() == b"new=1\n" and _owner_mode(path) == (NOBODY, NOGROUP, oct(0o640))
    (listed,) = list_backups(session, str(path))
    assert listed.hash == hashlib.sha256(original).hexdigest()[:12]
    for n in range(2, 5):
        _put_linked(session, path, f"new={n}\n".encode(), keep=2)
    assert [Path(b.path).read_bytes() for b in list_backups(session, str(path))] == [b"new=3\n", b"new=2\n"]
    assert [n for n in _names(tmp_path) if n.startswith(".")] == []


def test_a_file_with_another_link_or_changed_since_read_is_backed_up_as_a_copy_of_what_was_read(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "aria2c.conf"
    _existing(path, b"old=1\n")
    other = tmp_path / "elsewhere.conf"
    os.link(path, other)
    made = _put_linked(session, path, b"new=1\n")
    assert made is not None and Path(made).stat().st_ino != other.stat().st_ino, "a backup sharing an inode with another name"
    assert Path(made).read_bytes() == b"old=1\n" and other.read_bytes() == b"old=1\n"
    assert _owner_mode(Path(made)) == (NOBODY, NOGROUP, oct(0o640))
    other.unlink()
    # changed in place between the read and the backup (another size): the backup is what was read
    _existing(path, b"old=2\n")
    current = read_file(session, str(path))
    with session.sftp() as sftp:
        folder = list_folder(session, str(path), sftp=sftp)
        path.write_bytes(b"changed by hand meanwhile\n")
        made_backup = link_backup(session, current, folder, keep=3, sftp=sftp)
    assert made_backup is not None and Path(made_backup.path).read_bytes() == b"old=2\n"
    assert Path(made_backup.path).stat().st_ino != path.stat().st_ino


def test_restore_is_byte_identical_with_owner_and_mode(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "aria2c.conf"
    original = SECRET + bytes(range(256))
    _existing(path, original)
    _put(session, path, b"new=1\n")
    os.chown(path, 0, 0)
    os.chmod(path, 0o600)
    (generation,) = list_backups(session, str(path))
    state = restore(session, generation, validate_command="cmp -s {path} " + generation.path)
    assert path.read_bytes() == original and state.data == original
    assert _owner_mode(path) == (NOBODY, NOGROUP, oct(0o640))
    assert Path(generation.path).read_bytes() == original  # the generation stays
    # a generation changed after it was taken is refused, nothing written
    Path(generation.path).write_bytes(b"tampered\n")
    with pytest.raises(FileStepError) as info:
        restore(session, generation)
    assert info.value.outcome == "backup damaged"
    assert path.read_bytes() == original
    assert [n for n in _names(tmp_path) if n.startswith(".")] == []


def test_read_only_filesystem_is_a_clear_error_and_the_old_file_stays(session: Session, tmpfs: Path) -> None:
    path = tmpfs / "aria2c.conf"
    _existing(path, b"old=1\n")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    with pytest.raises(FileStepError) as info:
        _put(session, path, SECRET)
    assert info.value.one_line() == f"wn001.lab: cannot back up {path}: {tmpfs} is on a read-only filesystem"
    assert info.value.outcome == "read-only"
    with pytest.raises(FileStepError) as info:
        write_temp(session, str(path), SECRET)
    assert info.value.one_line() == f"wn001.lab: cannot write {path}: {tmpfs} is on a read-only filesystem"
    assert path.read_bytes() == b"old=1\n" and _names(tmpfs) == ["aria2c.conf"]


def test_full_filesystem_is_a_clear_error_and_the_old_file_stays_with_no_temp_left(session: Session, tmpfs: Path) -> None:
    path = tmpfs / "aria2c.conf"
    _existing(path, b"old=1\n")
    data = SECRET + b"#" * 20_000  # more than the 16 KiB the filesystem holds
    with pytest.raises(FileStepError) as info:
        _put(session, path, data)
    assert info.value.outcome == "disk full"
    assert info.value.one_line().startswith(f"wn001.lab: cannot write {path}: no space left on the filesystem of {tmpfs} (")
    assert info.value.one_line().endswith(f" bytes free, {len(data)} needed)")
    assert path.read_bytes() == b"old=1\n" and _owner_mode(path) == (NOBODY, NOGROUP, oct(0o640))
    # the backup of the old file was made before the write failed; no temp file of either is left
    assert [n for n in _names(tmpfs) if n.startswith(".")] == []
    assert [b.size for b in list_backups(session, str(path))] == [6]


def test_no_such_directory(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "missing" / "aria2c.conf"
    with pytest.raises(FileStepError) as info:
        write_temp(session, str(path), SECRET)
    assert info.value.one_line() == f"wn001.lab: cannot write {path}: no such directory {path.parent}"
    assert info.value.outcome == "no such directory"
    assert list_backups(session, str(path)) == []


def test_stale_temps_of_a_cut_connection_are_removed_and_only_ours(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "aria2c.conf"
    ours = tmp_path / temp_name("aria2c.conf")
    ours.write_bytes(b"half")
    theirs = tmp_path / ".aria2c.conf.swp"
    theirs.write_bytes(b"vim")
    assert remove_stale_temps(session, str(path)) == [str(ours)]
    assert _names(tmp_path) == [".aria2c.conf.swp"]
