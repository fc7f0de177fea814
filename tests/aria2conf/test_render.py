"""Layering, rendering, hashes, masking, templates and the site's generated RPC secret."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from siteadmin.aria2conf import build_profile, options_hash, parse_conf, profile_for, render, rpc_secret_path, site_rpc_secret
from siteadmin.aria2conf.render import builtin_options, builtin_template_dir
from siteadmin.errors import ConfigError
from siteadmin.secrets import MASK
from siteadmin.site import Site

SiteFactory = Callable[[str], Site]

LAYERED = """
    [site]
    name = "LAYERS"
    [wns]
    hosts = ["wn[001-004].example.org"]
    [wns.groups.big]
    hosts = ["wn[003-004].example.org"]
    aria2c = { max-overall-upload-limit = "100M", bt-max-peers = 80, seed-ratio = 2.0 }
    [wns.groups.old]
    hosts = ["wn004.example.org"]
    aria2c = { bt-max-peers = 20, file-allocation = "prealloc" }
    [wns.nodes."wn004.example.org"]
    aria2c = { seed-ratio = 0.5, bt-lpd-interface = "eth1" }
    [aria2c.options]
    seed-ratio = 1.0
    bt-max-peers = 55
    file-allocation = "falloc"
    max-overall-upload-limit = "20M"
    dir = "/var/lib/aria2/data"
    bt-seed-unverified = true
    """


def test_site_group_host_layering(make_site: SiteFactory) -> None:
    site = make_site(LAYERED)
    plain = build_profile(site, "wn001.example.org")
    assert plain.layers == ("built-in", "site")
    assert plain.options["seed-ratio"] == "1.0" and plain.options["bt-max-peers"] == "55"
    assert plain.options["max-overall-upload-limit"] == "20M"
    assert plain.options["bt-seed-unverified"] == "true"
    big = build_profile(site, "wn003.example.org")
    assert big.layers == ("built-in", "site", "group big")
    assert (big.options["max-overall-upload-limit"], big.options["bt-max-peers"], big.options["seed-ratio"]) == ("100M", "80", "2.0")
    assert big.origin["bt-max-peers"] == "group big" and big.origin["dir"] == "site"
    both = build_profile(site, "wn004.example.org")
    assert both.layers == ("built-in", "site", "group big", "group old", "host wn004.example.org")
    assert both.options["bt-max-peers"] == "20"  # group old comes after group big
    assert both.options["seed-ratio"] == "0.5" and both.origin["seed-ratio"] == "host wn004.example.org"
    assert both.options["file-allocation"] == "prealloc" and both.options["bt-lpd-interface"] == "eth1"
    assert both.origin["enable-rpc"] == "built-in" and both.origin["rpc-secret"] == "generated"


def test_builtin_baseline_follows_the_site(make_site: SiteFactory) -> None:
    site = make_site("""
        [wns]
        ports = "7000-7100"
        rpc_port = 16800
        [central]
        tracker_host = "tracker.example.org"
        tracker_port = 9000
        """)
    options = profile_for(site, "wn1.example.org")
    assert options["listen-port"] == options["dht-listen-port"] == "7000-7100"
    assert options["rpc-listen-port"] == "16800"
    assert options["bt-tracker"] == "http://tracker.example.org:9000/announce"
    assert options["rpc-listen-all"] == "false" and options["log-level"] == "notice"
    assert set(builtin_options(site)) <= set(options)


def test_site_can_override_the_builtin_baseline(make_site: SiteFactory) -> None:
    site = make_site("""
        [aria2c.options]
        enable-rpc = false
        log-level = "warn"
        bt-tracker = ""
        """)
    options = profile_for(site, "wn1")
    assert options["enable-rpc"] == "false" and "rpc-secret" not in options
    assert options["log-level"] == "warn" and options["bt-tracker"] == ""


def test_bad_value_names_host_layer_option_and_allowed(make_site: SiteFactory) -> None:
    site = make_site(LAYERED.replace('bt-max-peers = 20', 'bt-max-peers = "lots"'))
    render(site, "wn001.example.org")  # not in the group: fine
    with pytest.raises(ConfigError) as caught:
        render(site, "wn004.example.org")
    assert caught.value.message == 'wn004.example.org: [wns.groups.old] aria2c: bt-max-peers = "lots": must be an integer >= 0'


def test_unknown_option_suggests_the_close_match_and_hides_the_value(make_site: SiteFactory) -> None:
    site = make_site("""
        [aria2c.options]
        rpc-secrt = "hunter2-hunter2-hunter2-hunter2"
        """)
    with pytest.raises(ConfigError) as caught:
        profile_for(site, "wn1")
    assert caught.value.message == "wn1: [aria2c.options]: rpc-secrt: not an aria2c option siteadmin knows"
    assert caught.value.hint == "did you mean rpc-secret?"
    assert "hunter2" not in caught.value.one_line()


def test_toml_types_are_normalised(make_site: SiteFactory) -> None:
    site = make_site("""
        [aria2c.options]
        continue = true
        check-integrity = false
        bt-max-peers = 10
        seed-ratio = 0.0
        seed-time = 30
        follow-torrent = false
        """)
    options = profile_for(site, "wn1")
    assert (options["continue"], options["check-integrity"], options["bt-max-peers"]) == ("true", "false", "10")
    assert (options["seed-ratio"], options["seed-time"], options["follow-torrent"]) == ("0.0", "30", "false")


def test_float_for_an_integer_option_says_how_to_fix_it(make_site: SiteFactory) -> None:
    site = make_site("""
        [aria2c.options]
        bt-max-peers = 10.0
        """)
    with pytest.raises(ConfigError) as caught:
        profile_for(site, "wn1")
    assert caught.value.hint == "write 10 without the .0"


def test_output_is_deterministic_and_header_names_everything(make_site: SiteFactory) -> None:
    site = make_site(LAYERED)
    first = render(site, "wn004.example.org")
    again = render(site, "wn004.example.org")
    assert first == again
    lines = first.text.splitlines()
    assert lines[0].startswith("# aria2c configuration rendered by siteadmin")
    assert "# site: LAYERS" in lines[:6]
    assert "# host: wn004.example.org" in lines[:6]
    assert "# profile: built-in < site < group big < group old < host wn004.example.org" in lines[:6]
    assert f"# options: {first.hash}" in lines[:6]
    assert first.hash == options_hash(parse_conf(first.text))
    assert first.text.endswith("\n")


def test_hash_is_independent_of_layer_order_and_changes_with_any_value(make_site: SiteFactory) -> None:
    a = make_site("""
        [aria2c.options]
        seed-ratio = 1.0
        dir = "/data"
        """)
    b = make_site("""
        [aria2c.options]
        dir = "/data"
        seed-ratio = 1.0
        """)
    # both sites generate their own secret: compare without it
    ra, rb = render(a, "wn1"), render(b, "wn1")
    assert ra.text.replace(ra.options["rpc-secret"], "S").splitlines()[5:] == rb.text.replace(rb.options["rpc-secret"], "S").splitlines()[5:]
    same = dict(ra.options)
    assert options_hash(same) == ra.hash
    same["seed-ratio"] = "1.5"
    assert options_hash(same) != ra.hash
    without_secret = {k: v for k, v in ra.options.items() if k != "rpc-secret"}
    assert options_hash(without_secret).startswith("sha256:") and ra.hash.startswith("hmac-sha256:")


def test_masked_text_never_holds_a_secret(make_site: SiteFactory) -> None:
    site = make_site("""
        [aria2c.options]
        rpc-secret = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo"
        all-proxy = "http://proxy.example.org:3128"
        all-proxy-user = "alice"
        all-proxy-passwd = "proxy-pass-1234"
        http-proxy = "http://bob:url-pass-5678@proxy.example.org:3128"
        """)
    rendered = render(site, "wn1")
    for secret in ("Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo", "proxy-pass-1234", "url-pass-5678"):
        assert secret in rendered.text
        assert secret not in rendered.masked_text
        assert secret in rendered.secrets
    assert f"rpc-secret={MASK}" in rendered.masked_text
    assert f"all-proxy-passwd={MASK}" in rendered.masked_text
    assert f"http-proxy=http://bob:{MASK}@proxy.example.org:3128" in rendered.masked_text
    assert "all-proxy-user=alice" in rendered.masked_text


def test_generated_secret_is_0600_and_reused(make_site: SiteFactory) -> None:
    site = make_site("""
        [site]
        name = "GEN"
        """)
    path = rpc_secret_path(site)
    assert path == site.source.parent / "aria2c-rpc-secret"  # type: ignore[union-attr]
    assert not path.exists()
    first = profile_for(site, "wn1")["rpc-secret"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    mtime = path.stat().st_mtime_ns
    assert len(first) >= 43
    assert profile_for(site, "wn2")["rpc-secret"] == first
    assert render(site, "wn3").options["rpc-secret"] == first
    assert path.stat().st_mtime_ns == mtime


def test_secret_file_locations(make_site: SiteFactory, private_home: Path, tmp_path: Path) -> None:
    assert rpc_secret_path(Site()) == private_home / ".config/siteadmin/default.rpc-secret"
    site = make_site(f"""
        [aria2c]
        rpc_secret_file = "{tmp_path}/keys/rpc"
        """)
    assert rpc_secret_path(site) == tmp_path / "keys/rpc"
    assert site_rpc_secret(site, create=False) is None
    assert "rpc-secret" not in profile_for(site, "wn1", create_secret=False)
    secret = site_rpc_secret(site)
    assert secret and (tmp_path / "keys/rpc").read_text().strip() == secret


def test_a_too_open_secret_file_is_refused(make_site: SiteFactory) -> None:
    site = make_site("[site]\nname = \"X\"\n")
    path = rpc_secret_path(site)
    path.write_text("a" * 50 + "\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        render(site, "wn1")


def test_no_secret_is_generated_when_rpc_is_off_or_set(make_site: SiteFactory) -> None:
    off = make_site("[aria2c.options]\nenable-rpc = false\n")
    profile_for(off, "wn1")
    assert not rpc_secret_path(off).exists()
    given = make_site('[aria2c.options]\nrpc-secret = "x8Jd92kLs0Qp3mZ7vB1nC4xR6tY8uI0o"\n')
    assert profile_for(given, "wn1")["rpc-secret"] == "x8Jd92kLs0Qp3mZ7vB1nC4xR6tY8uI0o"
    assert not rpc_secret_path(given).exists()


def test_builtin_template_is_found_in_the_checkout() -> None:
    folder = builtin_template_dir()
    assert (folder / "aria2c.conf.j2").is_file()
    assert folder.name in ("templates", "_templates")


def test_site_template_comes_first_in_the_path(make_site: SiteFactory, tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    (own / "aria2c.conf.j2").write_text("# our own layout for {{ host }} {{ hash }}\n{% for n, v in options %}{{ n }}={{ v }}\n{% endfor %}")
    site = make_site(f'[aria2c]\ntemplate_path = ["{own}"]\n')
    rendered = render(site, "wn9")
    assert rendered.text.startswith("# our own layout for wn9 ")
    assert parse_conf(rendered.text) == rendered.options


def test_an_edited_template_is_picked_up_by_the_next_render(make_site: SiteFactory, tmp_path: Path) -> None:
    import os

    own = tmp_path / "edited"
    own.mkdir()
    template = own / "aria2c.conf.j2"
    body = "{% for n, v in options %}{{ n }}={{ v }}\n{% endfor %}"
    template.write_text("# first {{ host }}\n" + body)
    site = make_site(f'[aria2c]\ntemplate_path = ["{own}"]\n')
    assert render(site, "wn1").text.startswith("# first wn1")
    template.write_text("# second {{ host }}\n" + body)
    stamp = template.stat().st_mtime + 5
    os.utime(template, (stamp, stamp))
    assert render(site, "wn1").text.startswith("# second wn1")


def test_template_that_adds_or_drops_an_option_is_refused(make_site: SiteFactory, tmp_path: Path) -> None:
    adds = tmp_path / "adds"
    adds.mkdir()
    (adds / "aria2c.conf.j2").write_text("{% for n, v in options %}{{ n }}={{ v }}\n{% endfor %}daemon=true\n")
    with pytest.raises(ConfigError, match="does not set exactly the intended options .differs in: daemon"):
        render(make_site(f'[aria2c]\ntemplate_path = ["{adds}"]\n'), "wn1")
    twice = tmp_path / "twice"
    twice.mkdir()
    (twice / "aria2c.conf.j2").write_text("{% for n, v in options %}{{ n }}={{ v }}\n{% endfor %}rpc-listen-all=true\n")
    with pytest.raises(ConfigError, match="rpc-listen-all is set twice"):
        render(make_site(f'[aria2c]\ntemplate_path = ["{twice}"]\n'), "wn1")
    drops = tmp_path / "drops"
    drops.mkdir()
    (drops / "aria2c.conf.j2").write_text("{% for n, v in options %}{% if n != 'rpc-secret' %}{{ n }}={{ v }}\n{% endif %}{% endfor %}")
    with pytest.raises(ConfigError, match="differs in: rpc-secret"):
        render(make_site(f'[aria2c]\ntemplate_path = ["{drops}"]\n'), "wn1")


def test_template_errors_are_one_line_config_errors(make_site: SiteFactory, tmp_path: Path) -> None:
    strict = tmp_path / "strict"
    strict.mkdir()
    (strict / "aria2c.conf.j2").write_text("{{ no_such_variable }}\n")
    with pytest.raises(ConfigError, match="UndefinedError"):
        render(make_site(f'[aria2c]\ntemplate_path = ["{strict}"]\n'), "wn1")
    with pytest.raises(ConfigError, match="template not found"):
        render(make_site('[aria2c]\ntemplate = "missing.j2"\n'), "wn1")


def test_builtin_templates_are_found_in_a_wheel_layout(tmp_path: Path) -> None:
    """Installed from a wheel, the templates sit at siteadmin/_templates (pyproject force-include)."""
    import shutil
    import subprocess
    import sys

    import siteadmin

    package = Path(siteadmin.__file__).resolve().parent
    installed = tmp_path / "site-packages"
    shutil.copytree(package, installed / "siteadmin", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(package.parent / "templates", installed / "siteadmin" / "_templates")
    code = "from siteadmin.aria2conf.render import builtin_template_dir; print(builtin_template_dir())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(installed)}, check=True)
    assert result.stdout.strip() == str(installed / "siteadmin" / "_templates")
    (installed / "siteadmin" / "_templates" / "aria2c.conf.j2").unlink()
    failed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(installed)})
    assert failed.returncode != 0 and "built-in templates not found" in failed.stderr


def test_the_hash_never_helps_guess_a_proxy_password_even_with_rpc_off(make_site: SiteFactory) -> None:
    import hashlib

    site = make_site("""
        [aria2c.options]
        enable-rpc = false
        all-proxy = "proxy.example.org:3128"
        all-proxy-user = "alice"
        all-proxy-passwd = "summer2024"
        """)
    rendered = render(site, "wn1")
    assert "rpc-secret" not in rendered.options
    assert rendered.hash.startswith("hmac-sha256:")  # keyed with the site's secret all the same
    # an attacker's guess list against the plain hash of the options finds nothing
    for guess in ("summer2024", "winter2024", "password"):
        options = {**rendered.options, "all-proxy-passwd": guess}
        canonical = "".join(f"{k}={options[k]}\n" for k in sorted(options)).encode()
        assert "sha256:" + hashlib.sha256(canonical).hexdigest() != rendered.hash
    # with no key at all, secrets are masked before hashing: the hash does not depend on them
    unkeyed = options_hash(rendered.options)
    assert unkeyed == options_hash({**rendered.options, "all-proxy-passwd": "other"})
    assert unkeyed != options_hash({**rendered.options, "all-proxy-user": "bob"})
