"""The aria2c profile every WN runs: option catalogue, rendering, validation and security lint.

The rollout and the console use this package through the names below (``check_profiles`` is
the one profile check of render, lint, the console and the rollout plan); it imports nothing
from the CLI or the console.
"""

from __future__ import annotations

from siteadmin.aria2conf.catalogue import CATALOGUE, Applies, Kind, OptionSpec, aria2_form
from siteadmin.aria2conf.check import HostCheck, InterfaceProbe, ProfileCheck, Verdict, check_profiles, hosts_to_check
from siteadmin.aria2conf.conffile import parse_conf
from siteadmin.aria2conf.lint import RULES, Finding, allowed_rules, lint
from siteadmin.aria2conf.render import (
    PLACEHOLDER_HOST,
    Rendered,
    build_profile,
    masked,
    options_hash,
    profile_for,
    render,
    rpc_secret_path,
    site_rpc_secret,
)
from siteadmin.aria2conf.validate import aria2c_path, check_option, check_with_aria2c

__all__ = [
    "CATALOGUE",
    "HostCheck",
    "InterfaceProbe",
    "ProfileCheck",
    "Verdict",
    "check_profiles",
    "hosts_to_check",
    "PLACEHOLDER_HOST",
    "RULES",
    "Applies",
    "Finding",
    "Kind",
    "OptionSpec",
    "Rendered",
    "allowed_rules",
    "aria2_form",
    "aria2c_path",
    "build_profile",
    "check_option",
    "check_with_aria2c",
    "lint",
    "masked",
    "options_hash",
    "parse_conf",
    "profile_for",
    "render",
    "rpc_secret_path",
    "site_rpc_secret",
]
