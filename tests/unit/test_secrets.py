"""Secret files: 0600 from the first byte, atomic, refused when open to others."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from siteadmin import secrets
from siteadmin.errors import ConfigError, UntrustedFile
from siteadmin.secrets import generate_secret, read_secret_file, write_private_file, write_secret_file


def test_secret_file_is_0600_even_under_umask_0(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "deep" / "rpc-secret"
        write_secret_file(path, "s3cret-value")
        write_private_file(tmp_path / "conf", "rpc-secret=x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "conf").stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert read_secret_file(path) == "s3cret-value"
    assert [p.name for p in path.parent.iterdir()] == ["rpc-secret"]  # no temp file left


def test_readers_never_see_a_partial_file_while_it_is_replaced(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "conf"
    size = 1 << 20
    write_private_file(path, "A" * size)
    seen: set[tuple[str, int]] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            text = path.read_text()
            seen.add((text[:1], len(text)))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(40):
            write_private_file(path, ("B" if i % 2 == 0 else "A") * size)
    finally:
        done.set()
        reader.join()
    assert seen <= {("A", size), ("B", size)}
    assert len(seen) == 2  # the reader really saw both versions


def test_the_temp_file_is_0600_while_data_is_written(tmp_path: Path) -> None:
    import threading

    old = os.umask(0)
    modes: set[int] = set()
    try:
        for _ in range(5):
            done = threading.Event()

            def watch(done: threading.Event = done) -> None:
                while not done.is_set():
                    for entry in tmp_path.glob(".conf.*.tmp"):
                        try:
                            modes.add(stat.S_IMODE(entry.stat().st_mode))
                        except FileNotFoundError:
                            pass

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                write_private_file(tmp_path / "conf", "x" * (64 << 20))
            finally:
                done.set()
                watcher.join()
            if modes:
                break
    finally:
        os.umask(old)
    assert modes, "the temp file was never observed"
    assert modes == {0o600}


@pytest.mark.parametrize("value", ["two\nlines", "cr\rhere", "nul\0here"])
def test_control_characters_are_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="one line"):
        write_secret_file(tmp_path / "s", value)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_secret_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "pw"
    path.write_text("pw\n")
    path.chmod(mode)
    with pytest.raises(ConfigError) as info:
        read_secret_file(path, "LDAP password")
    assert "readable by others" in info.value.message
    assert "chmod 600" in (info.value.hint or "")
    assert "pw\n" not in info.value.one_line()


def test_empty_or_missing_secret_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    write_private_file(empty, "")
    with pytest.raises(ConfigError, match="one non-empty line"):
        read_secret_file(empty)
    with pytest.raises(ConfigError, match="cannot read"):
        read_secret_file(tmp_path / "missing")


def test_generated_secrets_are_long_and_distinct() -> None:
    values = {generate_secret() for _ in range(100)}
    assert len(values) == 100
    assert all(len(v) >= 43 for v in values)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://alice:pw@proxy:3128", "http://alice:********@proxy:3128"),
        ("alice:Sup3rSecret@proxy.example.org:3128", "alice:********@proxy.example.org:3128"),
        ("http://user:p@ss/Secret@proxy:3128", "http://user:********@proxy:3128"),
        ("https://u:a:b:c@h", "https://u:********@h"),
        ("http://proxy:3128", "http://proxy:3128"),
        ("admin@bastion:2222", "admin@bastion:2222"),
        ("plain text", "plain text"),
    ],
)
def test_mask_userinfo(text: str, shown: str) -> None:
    from siteadmin.secrets import mask_userinfo

    assert mask_userinfo(text) == shown


def test_racing_creators_all_get_the_secret_on_disk(tmp_path: Path) -> None:
    import threading

    from siteadmin.secrets import create_secret_file

    for round_ in range(20):
        path = tmp_path / f"round{round_}" / "rpc-secret"
        got: list[str] = []
        start = threading.Barrier(6)

        def create(value: str, path: Path = path, got: list[str] = got, start: threading.Barrier = start) -> None:
            start.wait()
            got.append(create_secret_file(path, value))

        threads = [threading.Thread(target=create, args=(f"secret-{i}",)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        on_disk = read_secret_file(path)
        assert got == [on_disk] * 6
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert [p.name for p in path.parent.iterdir()] == ["rpc-secret"]


def test_an_existing_secret_is_never_replaced(tmp_path: Path) -> None:
    from siteadmin.secrets import create_secret_file

    path = tmp_path / "s"
    write_secret_file(path, "first")
    assert create_secret_file(path, "second") == "first"
    assert read_secret_file(path) == "first"


NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")


def _read_in_thread(path: Path) -> BaseException | str | None:
    """read_secret_file in a thread, so a read that would block fails the test instead of hanging it."""
    outcome: list[BaseException | str] = []

    def run() -> None:
        try:
            outcome.append(read_secret_file(path, "aria2c RPC secret"))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    return outcome[0] if outcome else None


def test_a_fifo_as_secret_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "rpc-secret"
    os.mkfifo(fifo, 0o600)
    outcome = _read_in_thread(fifo)
    if outcome is None:  # the reader is still blocked: unblock it so the thread ends
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    assert isinstance(outcome, ConfigError), f"reading a FIFO gave {outcome!r}"
    assert outcome.one_line().startswith(f"{fifo}: aria2c RPC secret file is not a regular file")


def test_a_device_as_secret_file_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        read_secret_file(Path("/dev/zero"))


def test_a_symbolic_link_as_secret_file_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    write_secret_file(real, "s3cret")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="symbolic link") as info:
        read_secret_file(link, "LDAP password")
    assert "s3cret" not in info.value.one_line()


@needs_root
def test_a_secret_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    write_secret_file(path, "s3cret")
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(UntrustedFile) as info:
        read_secret_file(path, "LDAP password")
    assert info.value.message.startswith(f"{path}: LDAP password file is owned by nobody, not by ")
    assert "chown" in (info.value.hint or "")
    assert "s3cret" not in info.value.one_line()


def test_a_secret_file_in_a_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    path = folder / "pw"
    write_secret_file(path, "s3cret")
    folder.chmod(0o777)
    with pytest.raises(UntrustedFile, match="writable by group or others") as info:
        read_secret_file(path, "LDAP password")
    assert info.value.message.startswith(f"{folder}: folder holding the LDAP password file {path}")
    folder.chmod(0o1777)  # sticky: only the file's owner can replace it
    assert read_secret_file(path) == "s3cret"


def test_a_huge_secret_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big"
    write_private_file(path, "x" * (secrets.MAX_SECRET_BYTES + 10))
    with pytest.raises(ConfigError, match="larger than"):
        read_secret_file(path)


def test_the_dead_mask_helper_is_gone() -> None:
    assert not hasattr(secrets, "mask")
