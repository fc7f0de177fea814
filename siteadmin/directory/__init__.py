"""The site's CEs in the ALICE LDAP, in two layers.

``ldap`` is the LDAP layer: the connection (TLS verified, simple bind only), URL parsing, DNs and
filters with every name escaped, LDIF lines, the assertion control, and what each result code
means for the admin. ``ces`` is the CE service over it: list, show, and compare-and-set of
``installMethod`` with read-back, audit and LDIF change requests.

The names below are the public ones of both; import them from here.
"""

from siteadmin.directory.ces import (
    ATTR,
    CACHE_NOTE,
    CACHE_SECONDS,
    CE,
    TORRENT,
    Change,
    Directory,
    audit_value,
    is_torrent_value,
    modify_ldif,
    restore_method,
    validate_method,
)
from siteadmin.directory.ldap import (
    ASSERTION_CONTROL,
    PASSWORD_ENV,
    ConnectionLost,
    LdapClient,
    VerifiedTls,
    absent_assertion,
    ce_container,
    ce_dn,
    ce_filter,
    check_ce_name,
    ldif_line,
    parse_url,
    site_dn,
)

__all__ = [
    "ASSERTION_CONTROL",
    "ATTR",
    "CACHE_NOTE",
    "CACHE_SECONDS",
    "CE",
    "PASSWORD_ENV",
    "TORRENT",
    "Change",
    "ConnectionLost",
    "Directory",
    "LdapClient",
    "VerifiedTls",
    "absent_assertion",
    "audit_value",
    "ce_container",
    "ce_dn",
    "ce_filter",
    "check_ce_name",
    "is_torrent_value",
    "ldif_line",
    "modify_ldif",
    "parse_url",
    "restore_method",
    "site_dn",
    "validate_method",
]
