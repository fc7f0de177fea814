"""The ids, levels and reasons of the aria2c profile lint rules.

Kept below both of their users: the site config checks ``[aria2c] allow`` against these ids when
it loads, and ``siteadmin.aria2conf.lint`` applies the rules. Importing this module imports
nothing else of siteadmin, so the site config stays below the aria2c package. A new rule is
added here and implemented in the lint.
"""

from __future__ import annotations

ERROR, WARNING = "error", "warning"

RULES: dict[str, tuple[str, str]] = {
    "rpc-no-secret": (ERROR, "RPC is enabled without rpc-secret: anyone who reaches the port controls aria2c"),
    "rpc-weak-secret": (ERROR, "rpc-secret is weaker than 128 bits"),
    "rpc-listen-all": (ERROR, "RPC listens on all interfaces; siteadmin reaches it through SSH on loopback"),
    "rpc-allow-origin-all": (ERROR, "any web page opened on the WN could drive aria2c through RPC"),
    "proxy-credentials-in-url": (ERROR, "proxy credentials inside the URL; use the -user and -passwd options"),
    "log-level-debug": (ERROR, "debug logging (aria2's default level) writes huge logs"),
    "rpc-disabled": (WARNING, "RPC is off: siteadmin cannot see or steer this WN's aria2c"),
    "ports-outside-firewall": (WARNING, "ports outside the firewall range the site declares (wns.ports)"),
    "lpd-no-interface": (WARNING, "LPD enabled on a multi-homed WN without bt-lpd-interface"),
    "file-outside-state-dirs": (WARNING, "a log, session or DHT file outside dir and aria2c.state_dirs: aria2c writes or reads it there"),
}
"""rule id -> (level, reason)."""
