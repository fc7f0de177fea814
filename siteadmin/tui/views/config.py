"""The effective site config: where it comes from, central services, LDAP, WNs, files."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import DataTable

from siteadmin.inventory import Inventory, fold
from siteadmin.tui.views.base import View, cells


class ConfigView(View[list[tuple[str, str]]]):
    title = "Site config"
    hint = "The effective site config (site.toml), secrets never shown. r reloads."

    def compose_body(self) -> ComposeResult:
        table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_columns("what", "value")
        yield table

    def fetch(self) -> list[tuple[str, str]]:
        site = self.site
        hosts = Inventory(site).select()
        return [
            ("site", site.site.name or "(not set)"),
            ("config", str(site.source or "built-in defaults")),
            ("LDAP", f"{site.ldap.url}  base {site.ldap.base}"),
            ("bind DN", site.ldap.bind_dn or "(anonymous, read only)"),
            ("tracker", f"{site.central.tracker_host}:{site.central.tracker_port}"),
            ("seeder", f"{site.central.seeder_host}:{site.central.seeder_port}"),
            ("HTTP fallback", site.central.http_fallback),
            ("WNs", f"{fold(hosts) or '(none)'}  ({len(hosts)})"),
            ("WN ports", site.wns.ports),
            ("rollout", f"batches of {site.rollout.batch_size}, abort above {site.rollout.max_fail_percent:g}% failed"),
            ("audit log", str(site.audit.path)),
        ]

    def show(self, data: list[tuple[str, str]]) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for row in data:
            table.add_row(*cells(*row))
        self.set_status("config loaded", "ok")
