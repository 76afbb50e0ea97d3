"""A department's users from a CSV file (UTF-8 or Excel's exports) and from a real OpenLDAP
directory (slapd on loopback), shaped as Active Directory or as OpenLDAP/Univention."""

from __future__ import annotations

import codecs
import shutil
from pathlib import Path

import pytest
import yaml

from core.department import load_department
from core.errors import ConfigError

pytestmark = pytest.mark.skipif(shutil.which("slapd") is None and not Path("/usr/sbin/slapd").exists(),
                                reason="Debian's slapd is not installed (bin/setup installs it)")


def _dept(tmp_path: Path, **fields) -> Path:
    (tmp_path / "home").mkdir(exist_ok=True)
    cfg = {"name": "amt", "work_dir": "work", "sources": [{"name": "homes", "type": "folder", "root": "home"}],
           "target": {"type": "localdir", "root": "target"}, **fields}
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


# --- CSV -------------------------------------------------------------------------------------------

def test_csv_utf8_with_per_source_folders(tmp_path):
    (tmp_path / "people.csv").write_text(
        "source,target,folder,folder:homes,email,display_name\n"
        "anna,anna.m,,,anna@amt.test,Anna Müller\n"
        "ben,ben.k,Ben K,ben-home,,\n", encoding="utf-8")
    dept = load_department(_dept(tmp_path, users_from={"csv": "people.csv"}))
    anna, ben = dept.users
    assert (anna.source, anna.target, anna.email, anna.display_name) == ("anna", "anna.m", "anna@amt.test",
                                                                         "Anna Müller")
    assert ben.folder == "Ben K" and ben.folder_in("homes") == "ben-home"


@pytest.mark.parametrize("encoding", ["utf-8-sig", "cp1252"])
def test_csv_excel_dialects(tmp_path, encoding):
    """Excel in a German locale writes `;` and either a BOM'd UTF-8 or Windows-1252."""
    (tmp_path / "people.csv").write_bytes(
        "Source Login;Target Login;E-Mail;Display Name\r\njürgen;j.weiß;jw@amt.test;Jürgen Weiß\r\n"
        .encode(encoding))
    (user,) = load_department(_dept(tmp_path, users_from={"csv": "people.csv"})).users
    assert (user.source, user.target, user.display_name) == ("jürgen", "j.weiß", "Jürgen Weiß")


def test_csv_excel_unicode_text(tmp_path):
    """Excel's "Unicode Text" export: UTF-16 LE with its BOM, tab-separated, CRLF; the bad row is
    still reported with its line (the BOM does not shift the count)."""
    text = ("Source Login\tTarget Login\tE-Mail\tDisplay Name\r\n"
            "jürgen\tj.weiß\tjw@amt.test\tJürgen Weiß\r\n"
            "zoë\t../zoe\t\tZoë Ünal\r\n"
            "\"çelik, ayşe\"\tayse\t\t\"Ayşe \"\"Ay\"\" Çelik\"\r\n")
    (tmp_path / "people.txt").write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    with pytest.raises(ConfigError) as exc:
        load_department(_dept(tmp_path, users_from={"csv": "people.txt"}))
    assert "people.txt:3: target:" in str(exc.value) and "people.txt:2" not in str(exc.value)
    (tmp_path / "people.txt").write_bytes(codecs.BOM_UTF16_LE + text.replace("../zoe", "zoe").encode("utf-16-le"))
    users = {u.source: u for u in load_department(_dept(tmp_path, users_from={"csv": "people.txt"})).users}
    assert (users["jürgen"].target, users["jürgen"].display_name) == ("j.weiß", "Jürgen Weiß")
    assert users["zoë"].display_name == "Zoë Ünal" and users["çelik, ayşe"].display_name == 'Ayşe "Ay" Çelik'
    (tmp_path / "people.txt").write_bytes(codecs.BOM_UTF16_BE + text.replace("../zoe", "zoe").encode("utf-16-be"))
    assert len(load_department(_dept(tmp_path, users_from={"csv": "people.txt"})).users) == 3
    (tmp_path / "people.txt").write_bytes(codecs.BOM_UTF16_LE + b"s\x00o\x00u")     # cut in half a character
    with pytest.raises(ConfigError, match="neither UTF-8, UTF-16"):
        load_department(_dept(tmp_path, users_from={"csv": "people.txt"}))


def test_csv_every_bad_row_with_its_line(tmp_path):
    (tmp_path / "people.csv").write_text(
        "source,target\n"
        "anna,anna.m\n"
        ",nobody\n"                     # line 3: no source
        "ben,../etc\n"                  # line 4: a path trick
        "cem\n"                         # line 5: a cell short
        "\n"
        "dora,dora.x\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_department(_dept(tmp_path, users_from={"csv": "people.csv"}))
    text = str(exc.value)
    assert "people.csv:3: source:" in text and "people.csv:4: target:" in text and "people.csv:5:" in text
    assert "people.csv:2" not in text and "people.csv:7" not in text


def test_csv_merge_refused_unless_allowed(tmp_path):
    (tmp_path / "people.csv").write_text("source,target\nanna,shared\nben,shared\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="target user 'shared' receives 2 source users"):
        load_department(_dept(tmp_path, users_from={"csv": "people.csv"}))
    dept = load_department(_dept(tmp_path, users_from={"csv": "people.csv"}, allow_merge=["shared"]))
    assert [u.target for u in dept.users] == ["shared", "shared"]


def test_csv_unknown_column_and_no_users(tmp_path):
    (tmp_path / "people.csv").write_text("source,target,colour\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="column 'colour' is not known"):
        load_department(_dept(tmp_path, users_from={"csv": "people.csv"}))
    with pytest.raises(ConfigError, match="no users"):
        load_department(_dept(tmp_path))


# --- LDAP ------------------------------------------------------------------------------------------

from servers.slapd import ADMIN_DN, SUFFIX, Slapd, group_ldif, person_ldif  # noqa: E402


def _ldap_dept(tmp_path, monkeypatch, server: Slapd, **ldap) -> Path:
    monkeypatch.setenv("LDAP_PW", server.admin_password)
    cfg = {"url": server.url, "bind_dn": ADMIN_DN, "password": "env:LDAP_PW", "base": f"ou=people,{SUFFIX}",
           **ldap}
    return _dept(tmp_path, users_from={"ldap": cfg})


def _resolved(path):
    from flows.identity import resolve_users
    return resolve_users(load_department(path))


@pytest.fixture(scope="module")
def univention():
    """OpenLDAP/Univention shape: uid logins, a posixGroup (memberUid) and a groupOfNames (member)."""
    people = "".join(person_ldif("people", f"u{i:03}", mail=f"u{i:03}@amt.test", name=f"User {i}")
                     for i in range(1200))
    groups = group_ldif("groups", "bauamt", member_uids=[f"u{i:03}" for i in range(0, 1200, 2)])
    groups += group_ldif("groups", "kasse", member_dns=[f"uid=u{i:03},ou=people,{SUFFIX}" for i in (1, 3, 5)])
    with Slapd(people + groups, tls=True) as server:
        yield server


def test_ldap_ou_paged(univention, tmp_path, monkeypatch):
    """1,200 entries with pages of 100: every one arrives (a directory's size limit is per page)."""
    dept = _resolved(_ldap_dept(tmp_path, monkeypatch, univention, page_size=100))
    assert len(dept.users) == 1200
    u = dept.user("u007")
    assert (u.target, u.email, u.display_name) == ("u007", "u007@amt.test", "User 7")


def test_ldap_group_memberuid_and_member(univention, tmp_path, monkeypatch):
    dept = _resolved(_ldap_dept(tmp_path, monkeypatch, univention, group=f"cn=bauamt,ou=groups,{SUFFIX}"))
    assert len(dept.users) == 600 and all(int(u.source[1:]) % 2 == 0 for u in dept.users)
    dept = _resolved(_ldap_dept(tmp_path, monkeypatch, univention, group=f"cn=kasse,ou=groups,{SUFFIX}"))
    assert sorted(u.source for u in dept.users) == ["u001", "u003", "u005"]


def test_ldap_tls_with_ca_file(univention, tmp_path, monkeypatch):
    """LDAPS and StartTLS trust the directory through the CA file; without it the check fails."""
    for extra in ({"url": univention.ldaps_url}, {"url": univention.url.replace("127.0.0.1", "localhost"),
                                                  "start_tls": True}):
        dept = _resolved(_ldap_dept(tmp_path, monkeypatch, univention, ca_file=str(univention.ca_file),
                                    group=f"cn=kasse,ou=groups,{SUFFIX}", **extra))
        assert len(dept.users) == 3
    with pytest.raises(ConfigError, match="not a readable PEM bundle"):
        _resolved(_ldap_dept(tmp_path, monkeypatch, univention, url=univention.ldaps_url,
                             ca_file=str(Path(__file__))))
    import trustme
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    with pytest.raises(ConfigError, match="certificate is not trusted"):
        _resolved(_ldap_dept(tmp_path, monkeypatch, univention, url=univention.ldaps_url,
                             ca_file=str(tmp_path / "other-ca.pem")))


def test_ldap_wrong_password_is_one_clear_line(univention, tmp_path, monkeypatch):
    path = _ldap_dept(tmp_path, monkeypatch, univention)
    monkeypatch.setenv("LDAP_PW", "wrong-Secret-991")
    with pytest.raises(ConfigError) as exc:
        _resolved(path)
    assert "refused the bind" in str(exc.value) and "wrong-Secret-991" not in str(exc.value)


def test_ldap_active_directory_shape(tmp_path, monkeypatch):
    """sAMAccountName at the source, the UPN's mail as target login; a group with member DNs;
    an entry without sAMAccountName is reported with its DN, and two sources on one target refused."""
    people = person_ldif("staff", "x1", mail="anna@amt.test", name="Anna", sam="AMUELLER", upn="anna@amt.test")
    people += person_ldif("staff", "x2", mail="ben@amt.test", name="Ben", sam="BKRAUSE", upn="ben@amt.test")
    people += person_ldif("staff", "x3", mail="cem@amt.test", name="Cem", sam="CYILMAZ", upn="ben@amt.test")
    people += person_ldif("staff", "x4", mail="dora@amt.test", name="Dora")
    group = group_ldif("groups", "amt-all", member_dns=[f"uid=x{i},ou=staff,{SUFFIX}" for i in (1, 2)])
    with Slapd(people + group, ous=("staff", "groups")) as server:
        ad = {"base": f"ou=staff,{SUFFIX}", "source_attr": "sAMAccountName", "target_attr": "userPrincipalName"}
        dept = _resolved(_ldap_dept(tmp_path, monkeypatch, server, group=f"cn=amt-all,ou=groups,{SUFFIX}", **ad))
        assert {u.source: u.target for u in dept.users} == {"AMUELLER": "anna@amt.test", "BKRAUSE": "ben@amt.test"}
        with pytest.raises(ConfigError) as exc:
            _resolved(_ldap_dept(tmp_path, monkeypatch, server, **ad))
        assert f"uid=x4,ou=staff,{SUFFIX}: has no sAMAccountName" in str(exc.value)
        with pytest.raises(ConfigError, match="target user 'ben@amt.test' receives 2 source users"):
            _resolved(_ldap_dept(tmp_path, monkeypatch, server, filter="(sAMAccountName=*)", **ad))


def test_ldap_nested_groups_with_a_cycle(tmp_path, monkeypatch):
    """OpenLDAP shape: the department group holds a person and two groups; one of those holds a
    posixGroup-free groupOfNames that points back at the department (a cycle), and a member DN
    that no longer exists. Everyone reachable is a user, each once; nobody outside is."""
    g = lambda cn: f"cn={cn},ou=groups,{SUFFIX}"                               # noqa: E731
    p = lambda uid: f"uid={uid},ou=people,{SUFFIX}"                            # noqa: E731
    people = "".join(person_ldif("people", u, mail=f"{u}@amt.test") for u in ("a1", "b1", "b2", "c1", "x9"))
    groups = group_ldif("groups", "amt", member_dns=[p("a1"), g("team-b"), g("team-c")])
    groups += group_ldif("groups", "team-b", member_dns=[p("b1"), p("b2"), g("team-c")])
    groups += group_ldif("groups", "team-c", member_dns=[p("c1"), g("amt"), g("gone"), p("b1")])   # cycle
    with Slapd(people + groups) as server:
        dept = _resolved(_ldap_dept(tmp_path, monkeypatch, server, group=g("amt")))
        assert [u.source for u in dept.users] == ["a1", "b1", "b2", "c1"]
        dept = _resolved(_ldap_dept(tmp_path, monkeypatch, server, group=g("team-c")))
        assert [u.source for u in dept.users] == ["a1", "b1", "b2", "c1"]        # amt is nested in team-c
        with pytest.raises(ConfigError, match="does not exist"):
            _resolved(_ldap_dept(tmp_path, monkeypatch, server, group=g("no-such-group")))


def test_ldap_active_directory_member_of(tmp_path, monkeypatch):
    """AD shape: people carry memberOf (the back-link AD and OpenLDAP's memberof overlay keep);
    a person whose memberOf names a group nested in the department's is one of its users even
    when the group's own member list does not name them. slapd is no Active Directory, so the
    IN_CHAIN search is not used (the root DSE lacks AD's capability) and the expansion is ours."""
    g = lambda cn: f"cn={cn},ou=groups,{SUFFIX}"                               # noqa: E731
    people = person_ldif("staff", "x1", sam="AMUELLER", upn="anna@amt.test", member_of=[g("amt-all")])
    people += person_ldif("staff", "x2", sam="BKRAUSE", upn="ben@amt.test", member_of=[g("amt-kasse")])
    people += person_ldif("staff", "x3", sam="CYILMAZ", upn="cem@amt.test", member_of=[g("other")])
    groups = group_ldif("groups", "amt-all", member_dns=[g("amt-kasse")])
    groups += group_ldif("groups", "amt-kasse", member_dns=[g("amt-all")])
    groups += group_ldif("groups", "other", member_dns=[f"uid=x3,ou=staff,{SUFFIX}"])
    with Slapd(people + groups, ous=("staff", "groups")) as server:
        dept = _resolved(_ldap_dept(tmp_path, monkeypatch, server, base=f"ou=staff,{SUFFIX}", group=g("amt-all"),
                                    source_attr="sAMAccountName", target_attr="userPrincipalName"))
        assert {u.source: u.target for u in dept.users} == {"AMUELLER": "anna@amt.test", "BKRAUSE": "ben@amt.test"}
