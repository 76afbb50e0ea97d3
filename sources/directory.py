"""A department's users read from an LDAP directory (Active Directory, OpenLDAP, Univention).

The department is a group (its `member`/`uniqueMember` DNs or its `memberUid` logins, the
members of groups nested in it, and users whose `memberOf` names one of them) or every entry
below `base` matching `filter` (an OU). Searches are paged (RFC 2696), as Active Directory
returns at most 1,000 entries per page and a department may have thousands. ldap3 is a pure
Python client, imported here only, so the rest of umstieg starts without it.
"""

from __future__ import annotations

import ssl

from core.department import LdapDirectory, User
from core.errors import ConfigError, TransientError

__all__ = ["users_from_ldap"]


def _first(entry: dict, attr: str) -> str | None:
    value = entry.get(attr)
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value).strip() if value not in (None, "") else None


def _connect(cfg: LdapDirectory):
    import ldap3
    from ldap3.core.exceptions import (LDAPBindError, LDAPException, LDAPInvalidCredentialsResult,
                                       LDAPSocketOpenError)
    tls = None
    if cfg.ca_file is not None:
        try:
            ssl.create_default_context(cafile=str(cfg.ca_file))
        except (OSError, ssl.SSLError):
            raise ConfigError(f"LDAP {cfg.url}: ca_file {cfg.ca_file} is not a readable PEM bundle of CA "
                              "certificates") from None
    if cfg.url.startswith("ldaps://") or cfg.start_tls:
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT,
                        ca_certs_file=str(cfg.ca_file) if cfg.ca_file else None)
    server = ldap3.Server(cfg.url, use_ssl=cfg.url.startswith("ldaps://"), tls=tls, get_info=ldap3.NONE,
                          connect_timeout=30)
    password = cfg.password.resolve().get_secret_value() if cfg.password else None
    conn = ldap3.Connection(server, user=cfg.bind_dn, password=password, read_only=True, receive_timeout=120,
                            raise_exceptions=True)
    try:
        conn.open()
        if cfg.start_tls:
            conn.start_tls()
        conn.bind()
    except (LDAPBindError, LDAPInvalidCredentialsResult):
        raise ConfigError(f"LDAP {cfg.url}: the directory refused the bind as {cfg.bind_dn or 'anonymous'}: "
                          "check bind_dn and the password") from None
    except LDAPSocketOpenError as exc:
        if "certificate verify failed" in str(exc).lower() or "CERTIFICATE_VERIFY_FAILED" in str(exc):
            # ldap3 reports TLS trust and an unreachable host with one class: a certificate the CA
            # does not vouch for will not get better by retrying
            raise ConfigError(f"LDAP {cfg.url}: the directory's certificate is not trusted: give the CA "
                              "that signed it as ca_file") from None
        raise TransientError(f"LDAP {cfg.url}: cannot connect: {str(exc).splitlines()[0][:200]}") from None
    except LDAPException as exc:
        raise ConfigError(f"LDAP {cfg.url}: {type(exc).__name__}: {str(exc)[:200]}") from None
    return conn


def _search(conn, cfg: LdapDirectory, base: str, filt: str, attrs: list[str], scope="SUBTREE") -> list[dict]:
    """Every entry (with its `dn`), page by page."""
    from ldap3.core.exceptions import LDAPException, LDAPNoSuchObjectResult
    try:
        out = []
        for e in conn.extend.standard.paged_search(base, filt, search_scope=scope, attributes=attrs,
                                                   paged_size=cfg.page_size, generator=True):
            if e.get("type") == "searchResEntry":
                out.append({"dn": e["dn"], **{k: v for k, v in e["attributes"].items()}})
        return out
    except LDAPNoSuchObjectResult:
        raise ConfigError(f"LDAP {cfg.url}: {base!r} does not exist in the directory") from None
    except LDAPException as exc:
        raise ConfigError(f"LDAP {cfg.url}: the search below {base!r} failed: {type(exc).__name__}: "
                          f"{str(exc)[:200]}") from None


#: Active Directory's LDAP_MATCHING_RULE_IN_CHAIN: `(memberOf:<this>:=<group DN>)` matches the
#: members of the group and of every group nested in it, in one search on the server
IN_CHAIN = "1.2.840.113556.1.4.1941"
#: LDAP_CAP_ACTIVE_DIRECTORY_OID in the root DSE's supportedCapabilities: the server is AD (or AD LDS)
_AD_CAPABILITY = "1.2.840.113556.1.4.800"
_MEMBER_ATTRS = ("member", "uniqueMember", "memberUid")


def _is_active_directory(conn, cfg: LdapDirectory) -> bool:
    """Whether the server announces Active Directory's capability (the root DSE, one base search):
    only then is the IN_CHAIN matching rule known; OpenLDAP answers it with no entries at all."""
    try:
        root = _search(conn, cfg, "", "(objectClass=*)", ["supportedCapabilities"], scope="BASE")
    except ConfigError:
        return False
    return bool(root) and _AD_CAPABILITY in {str(c) for c in root[0].get("supportedCapabilities", [])}


def _members(conn, cfg: LdapDirectory, group: str, entries: list[dict]) -> list[dict]:
    """The entries that belong to `group` (cfg.group): its members, and those of every group nested in it
    (a member DN that is not one of the users below base is followed as a group, each group once:
    a cycle of groups ends), matched by DN (member, uniqueMember), by login (memberUid) or by the
    users' own memberOf (Active Directory, OpenLDAP's memberof overlay) naming any of the groups."""
    dns: set[str] = set()
    uids: set[str] = set()
    users = {e["dn"].lower() for e in entries}
    groups: set[str] = set()
    todo = [group]
    while todo:
        dn = todo.pop()
        if dn.lower() in groups:
            continue
        groups.add(dn.lower())
        try:
            found = _search(conn, cfg, dn, "(objectClass=*)", list(_MEMBER_ATTRS), scope="BASE")
        except ConfigError:
            if dn.lower() == group.lower():
                raise
            continue                      # a member DN that no longer exists: nothing to follow
        if not found:
            if dn.lower() == group.lower():
                raise ConfigError(f"LDAP {cfg.url}: the group {group!r} does not exist")
            continue
        uids |= {u.lower() for u in found[0].get("memberUid", [])}
        for member in (d for a in ("member", "uniqueMember") for d in found[0].get(a, [])):
            if member.lower() in users:
                dns.add(member.lower())
            elif member.lower() not in groups:
                todo.append(member)       # a nested group (or a person outside base: one look, no members)
    return [e for e in entries if e["dn"].lower() in dns
            or (_first(e, "uid") or "").lower() in uids
            or (_first(e, cfg.source_attr) or "").lower() in uids
            or any(str(g).lower() in groups for g in e.get("memberOf", []))]


def users_from_ldap(cfg: LdapDirectory) -> tuple[list[User], list[str]]:
    """The department's users as the directory lists them, and every entry that cannot be one
    (no source or target login, a login that is not a plain name), each with its DN. With a
    group: on Active Directory one search with the IN_CHAIN rule (members of nested groups
    included); elsewhere the group's members expanded through nested groups here."""
    conn = _connect(cfg)
    try:
        attrs = sorted({cfg.source_attr, cfg.target_attr, cfg.mail_attr, cfg.name_attr, "uid", "memberOf"})
        if cfg.group and _is_active_directory(conn, cfg):
            from ldap3.utils.conv import escape_filter_chars
            chained = f"(memberOf:{IN_CHAIN}:={escape_filter_chars(cfg.group)})"
            if not _search(conn, cfg, cfg.group, "(objectClass=*)", ["objectClass"], scope="BASE"):
                raise ConfigError(f"LDAP {cfg.url}: the group {cfg.group!r} does not exist")
            entries = _search(conn, cfg, cfg.base, f"(&{cfg.filter}{chained})", attrs)
        else:
            entries = _search(conn, cfg, cfg.base, cfg.filter, attrs)
            if cfg.group:
                entries = _members(conn, cfg, cfg.group, entries)
    finally:
        conn.unbind()
    users, problems = [], []
    for e in entries:
        source, target = _first(e, cfg.source_attr), _first(e, cfg.target_attr)
        if not source or not target:
            missing = cfg.source_attr if not source else cfg.target_attr
            problems.append(f"{e['dn']}: has no {missing}")
            continue
        try:
            users.append(User(source=source, target=target, email=_first(e, cfg.mail_attr),
                              display_name=_first(e, cfg.name_attr)))
        except ValueError as exc:
            problems.append(f"{e['dn']}: {str(exc).splitlines()[-1].strip()[:200]}")
    # the directory's order is its own (insertion, index): a sign-off list reads best sorted
    return sorted(users, key=lambda u: u.source.casefold()), problems
