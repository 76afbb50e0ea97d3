"""A department's users read from an LDAP directory (Active Directory, OpenLDAP, Univention).

The department is a group (its `member`/`uniqueMember` DNs or its `memberUid` logins) or every
entry below `base` matching `filter` (an OU). Searches are paged (RFC 2696), as Active Directory
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
    from ldap3.core.exceptions import LDAPException, LDAPSocketOpenError
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
    except (ldap3.core.exceptions.LDAPBindError, ldap3.core.exceptions.LDAPInvalidCredentialsResult):
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


def users_from_ldap(cfg: LdapDirectory) -> tuple[list[User], list[str]]:
    """The department's users as the directory lists them, and every entry that cannot be one
    (no source or target login, a login that is not a plain name), each with its DN."""
    conn = _connect(cfg)
    try:
        attrs = sorted({cfg.source_attr, cfg.target_attr, cfg.mail_attr, cfg.name_attr, "uid"})
        entries = _search(conn, cfg, cfg.base, cfg.filter, attrs)
        if cfg.group:
            group = _search(conn, cfg, cfg.group, "(objectClass=*)", ["member", "uniqueMember", "memberUid"],
                            scope="BASE")
            if not group:
                raise ConfigError(f"LDAP {cfg.url}: the group {cfg.group!r} does not exist")
            dns = {d.lower() for a in ("member", "uniqueMember") for d in group[0].get(a, [])}
            uids = {u.lower() for u in group[0].get("memberUid", [])}
            entries = [e for e in entries if e["dn"].lower() in dns
                       or (_first(e, "uid") or "").lower() in uids
                       or (_first(e, cfg.source_attr) or "").lower() in uids]
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
