"""The test tiers: a test not marked lab that would start a daemon fails, and says what to add."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import daemon_started

pytest_plugins = ("pytester",)

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
QUIET = ("-p", "no:cacheprovider", "-p", "no:textual-snapshot")  # the snapshot plugin keeps one temp dir per process

# ssh_lab stands in for every daemon fixture: here it only leaves a trace, so a broken guard
# shows as a missing failure, never as a daemon started by this test.
MODULE = '''
import subprocess
from pathlib import Path

import pytest

TRACE = Path(__file__).with_name("started")


@pytest.fixture(scope="module")
def ssh_lab():
    TRACE.write_text("ssh_lab ran")
    return None


@pytest.fixture
def built_on_it(ssh_lab):
    return ssh_lab


def test_unmarked_asks_for_a_daemon_fixture(built_on_it):
    pass


@pytest.mark.lab
def test_marked_may(ssh_lab):
    pass


def test_unmarked_starts_slapd_itself():
    # a path that cannot exist: if the guard let it through, Popen itself would fail
    subprocess.Popen(["ip", "netns", "exec", "nowhere", "/nonexistent/slapd", "-d", "0"])


def test_unmarked_starts_sshd_in_a_thread_that_swallows_failures():
    import threading

    def work():
        try:
            subprocess.Popen(["/nonexistent/sshd", "-D"])
        except BaseException:
            pass  # as a fan-out that turns every failure into a host result

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()


def test_unmarked_aria2c_check_is_no_daemon():
    with pytest.raises(FileNotFoundError):
        subprocess.Popen(["/nonexistent/aria2c", "--conf-path=x", "--enable-rpc=false", "--daemon=false", "--input-file="])
'''


def test_an_unmarked_daemon_test_fails_before_its_fixtures_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini('[pytest]\nasyncio_default_fixture_loop_scope = function\nmarkers =\n    lab: needs the real lab site\n')
    pytester.makepyfile(test_tiers_inner=MODULE)
    # only the unmarked test first: the guard must stop it before ssh_lab runs
    first = pytester.runpytest_inprocess(*QUIET, "-k", "asks_for")
    first.assert_outcomes(errors=1)
    first.stdout.fnmatch_lines([
        "*test_unmarked_asks_for_a_daemon_fixture uses ssh_lab, which starts daemons, but is not marked lab: "
        "add `@pytest.mark.lab` above the test, or `pytestmark = pytest.mark.lab`*",
    ])
    assert not (pytester.path / "started").exists()

    every = pytester.runpytest_inprocess(*QUIET)
    every.assert_outcomes(passed=2, failed=2, errors=1)
    every.stdout.fnmatch_lines_random([
        "*test_unmarked_starts_slapd_itself starts slapd but is not marked lab: add `@pytest.mark.lab`*",
        "*test_unmarked_starts_sshd_in_a_thread_that_swallows_failures starts sshd but is not marked lab*",
    ])
    assert "No such file" not in every.stdout.str()  # the guard stopped it, not a missing binary

    fast = pytester.runpytest_inprocess(*QUIET, "-m", "not lab", "-k", "aria2c")
    fast.assert_outcomes(passed=1)


EARLY_MODULE = """
import time
from pathlib import Path

STARTED = Path(__file__).with_name("started")


def start():
    STARTED.write_text(str(time.monotonic()))


START_EARLY = {"test_slow_gate": start}


def test_first():
    assert STARTED.exists()  # started before any test ran


def test_slow_gate():
    pass
"""


def test_slow_gates_start_when_the_tests_are_collected(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_early=EARLY_MODULE)
    pytester.runpytest_inprocess(*QUIET).assert_outcomes(passed=2)
    (pytester.path / "started").unlink()
    pytester.runpytest_inprocess(*QUIET, "-k", "first").assert_outcomes(failed=1)  # not selected: not started
    pytester.runpytest_inprocess(*QUIET, "--collect-only")
    assert not (pytester.path / "started").exists()


@pytest.mark.parametrize(
    ("args", "program"),
    [
        (["/usr/sbin/sshd", "-D", "-f", "/tmp/x/sshd_config"], "sshd"),
        ("slapd -f slapd.conf -d 0", "slapd"),
        (["ip", "netns", "exec", "sl0-cern", "opentracker", "-p", "8088"], "opentracker"),
        ([Path("/usr/bin/aria2c"), "--conf-path=/tmp/a.conf"], "aria2c"),
        (["aria2c", "--conf-path=/tmp/a.conf", "--enable-rpc=false", "--daemon=false", "--input-file="], None),
        (["ssh", "wn001", "systemctl", "restart", "sshd"], None),
        (["ip", "netns", "add", "sl0-cern"], None),
        (["/work/.venv/bin/siteadmin", "lab", "up", "--wns", "2"], "a lab (siteadmin lab up)"),
        (["python3", "-m", "siteadmin", "--site", "x.toml", "lab", "console"], "a lab (siteadmin lab console)"),
        (["python3", "-m", "siteadmin", "lab", "status"], None),
        ([], None),
    ],
)
def test_which_starts_count_as_daemons(args: object, program: str | None) -> None:
    assert daemon_started(args) == program
