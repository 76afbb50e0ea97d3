"""A real OpenLDAP directory (Debian's `slapd`) for tests and benchmarks, on 127.0.0.1 with free ports.

It runs from its own `slapd.conf` in a temporary folder (mdb database, schema files from
/etc/ldap/schema), never from /etc/ldap's cn=config or the Debian service. Entries are loaded with
`slapadd` before the server starts, so 10,000 users take a second, not a minute of LDAP adds.

Two shapes of directory are offered by the LDIF helpers:
- OpenLDAP/Univention: `inetOrgPerson` entries with `uid`, groups as `posixGroup` (memberUid) or
  `groupOfNames` (member DNs);
- Active Directory: the same people also carry `sAMAccountName` and `userPrincipalName` (a small
  schema declared here, since Debian's msuser.schema needs AD's whole object model), groups with
  `member` DNs.

TLS (`tls=True`): an LDAPS port and StartTLS on the plain port, with a certificate made by
`trustme` whose CA is `ca_file`. The server is started with the inherited environment, so the
test session's end check finds it by its marker; stop() ends it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from servers import free_port

__all__ = ["Slapd", "SUFFIX", "ADMIN_DN", "person_ldif", "group_ldif", "free_port"]

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SUFFIX = "dc=umstieg,dc=test"
ADMIN_DN = f"cn=admin,{SUFFIX}"

_AD_SCHEMA = """\
attributetype ( 1.3.6.1.4.1.55555.1.1 NAME 'sAMAccountName' EQUALITY caseIgnoreMatch
  SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.2 NAME 'userPrincipalName' EQUALITY caseIgnoreMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.3 NAME 'memberOf' EQUALITY distinguishedNameMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )
objectclass ( 1.3.6.1.4.1.55555.2.1 NAME 'umstiegADAccount' SUP top AUXILIARY
  MAY ( sAMAccountName $ userPrincipalName $ memberOf ) )
"""


def person_ldif(ou: str, uid: str, mail: str | None = None, name: str | None = None,
                sam: str | None = None, upn: str | None = None, member_of: list[str] = ()) -> str:
    """One person below `ou=<ou>` (AD-shaped when `sam`, `upn` or `member_of` is given; `member_of`
    is AD's back-link to the person's groups, written as the memberof overlay or AD keeps it)."""
    lines = [f"dn: uid={uid},ou={ou},{SUFFIX}", "objectClass: inetOrgPerson"]
    if sam or upn or member_of:
        lines.append("objectClass: umstiegADAccount")
    lines += [f"uid: {uid}", f"cn: {name or uid}", f"sn: {(name or uid).split()[-1]}"]
    lines += [f"mail: {mail}"] if mail else []
    lines += [f"displayName: {name}"] if name else []
    lines += [f"sAMAccountName: {sam}"] if sam else []
    lines += [f"userPrincipalName: {upn}"] if upn else []
    lines += [f"memberOf: {g}" for g in member_of]
    return "\n".join(lines) + "\n\n"


def group_ldif(ou: str, cn: str, member_dns: list[str] = (), member_uids: list[str] = ()) -> str:
    """A group: `groupOfNames` with member DNs (AD, OpenLDAP), or `posixGroup` with memberUid."""
    if member_uids:
        body = ["objectClass: posixGroup", "gidNumber: 5000", *[f"memberUid: {u}" for u in member_uids]]
    else:
        body = ["objectClass: groupOfNames", *[f"member: {d}" for d in member_dns]]
    return "\n".join([f"dn: cn={cn},ou={ou},{SUFFIX}", f"cn: {cn}", *body]) + "\n\n"


class Slapd:
    """One OpenLDAP server with its own configuration, database and ports."""

    def __init__(self, ldif: str = "", ous: tuple[str, ...] = ("people", "groups"), tls: bool = False,
                 admin_password: str = "admin-pw-Lq7", base: Path | None = None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="umstieg-slapd-", dir=base))
        self.admin_password = admin_password
        self.port = free_port()
        self.ssl_port = free_port() if tls else None
        self.tls = tls
        self.ca_file: Path | None = None
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.ldaps_url = f"ldaps://localhost:{self.ssl_port}" if tls else None
        top = f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: umstieg\no: umstieg\n\n"
        top += "".join(f"dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n\n" for ou in ous)
        self.ldif = top + ldif
        self._proc: subprocess.Popen | None = None

    def _config(self) -> Path:
        (self.base / "db").mkdir()
        (self.base / "ad.schema").write_text(_AD_SCHEMA)
        lines = [f"include /etc/ldap/schema/{s}.schema" for s in ("core", "cosine", "inetorgperson", "nis")]
        lines += [f"include {self.base / 'ad.schema'}", "modulepath /usr/lib/ldap", "moduleload back_mdb",
                  f"pidfile {self.base / 'slapd.pid'}", "sizelimit unlimited"]
        if self.tls:
            import trustme
            ca = trustme.CA()
            cert = ca.issue_cert("localhost", "127.0.0.1")
            self.ca_file = self.base / "ca.pem"
            ca.cert_pem.write_to_path(str(self.ca_file))
            cert.cert_chain_pems[0].write_to_path(str(self.base / "cert.pem"))
            cert.private_key_pem.write_to_path(str(self.base / "key.pem"))
            lines += [f"TLSCACertificateFile {self.ca_file}", f"TLSCertificateFile {self.base / 'cert.pem'}",
                      f"TLSCertificateKeyFile {self.base / 'key.pem'}"]
        lines += ["database mdb", f"suffix \"{SUFFIX}\"", f"rootdn \"{ADMIN_DN}\"",
                  f"rootpw {self.admin_password}", f"directory {self.base / 'db'}", "maxsize 1073741824",
                  "index objectClass eq", "index uid,memberUid,member eq",
                  "access to attrs=userPassword by self write by anonymous auth by * none",
                  "access to * by * read"]
        conf = self.base / "slapd.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> "Slapd":
        conf = self._config()
        (self.base / "data.ldif").write_text(self.ldif)
        subprocess.run([SLAPADD, "-q", "-f", str(conf), "-l", str(self.base / "data.ldif")], check=True,
                       capture_output=True, text=True)
        urls = self.url + "/" + (f" ldaps://127.0.0.1:{self.ssl_port}/" if self.tls else "")
        log = open(self.base / "slapd.log", "wb")
        # -d 0: stay in the foreground (so stop() ends exactly this process); inherited environment
        self._proc = subprocess.Popen([SLAPD, "-d", "0", "-f", str(conf), "-h", urls],
                                      stdout=log, stderr=subprocess.STDOUT)
        # no deadline a busy machine could miss: wait as long as the server lives
        while not self._listening(self.port) or (self.tls and not self._listening(self.ssl_port)):
            if self._proc.poll() is not None:
                raise RuntimeError(f"slapd ended at start: {(self.base / 'slapd.log').read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    @staticmethod
    def _listening(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "Slapd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
