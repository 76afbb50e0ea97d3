"""A department of 10,000 users resolved from a real OpenLDAP directory and checked (no data moves).

A slapd on loopback (tests/servers/slapd.py) holds the users below an OU, a posixGroup naming
every one of them (memberUid), and nested groups: a department group of `--divisions` division
groups, each of `--teams` team groups, which name the users by DN (groupOfNames), one team group
also naming the department group back (a cycle). A folder source has each user's folder and the
target is a local tree with each user's folder. Timed, each best of `--rounds`:

1. resolve: the paged search of the OU (pages of 500) plus the flat group, into validated `User`s
   and the identity-map check (`with_users`);
2. resolve through the nested groups (each group one base search, expanded here: slapd has no
   IN_CHAIN rule);
3. check: `check_identities` over every pair (source folder exists, target folder exists);
4. the same department from a CSV export of the same users (`load_department`).

    .venv/bin/python benchmarks/users_directory.py [--users 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import yaml  # noqa: E402

from servers.slapd import ADMIN_DN, SUFFIX, Slapd, group_ldif, person_ldif  # noqa: E402


def best(rounds: int, work) -> tuple[float, object]:
    times, result = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - t)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--divisions", type=int, default=10)
    parser.add_argument("--teams", type=int, default=10, help="team groups per division")
    args = parser.parse_args()
    from core.department import load_department
    from flows.identity import check_identities, resolve_users

    with tempfile.TemporaryDirectory(prefix="umstieg-bench-users-") as tmp:
        tmp = Path(tmp)
        logins = [f"user{i:05}" for i in range(args.users)]
        for sub in ("home", "target"):
            for login in logins:
                (tmp / sub / (login if sub == "home" else f"t.{login}")).mkdir(parents=True)
        ldif = "".join(person_ldif("people", u, mail=f"{u}@amt.test", name=f"Person {u[4:]}", sam=f"t.{u}")
                       for u in logins)
        ldif += group_ldif("groups", "amt", member_uids=logins)
        teams = [f"team-{d}-{t}" for d in range(args.divisions) for t in range(args.teams)]
        dn = lambda cn: f"cn={cn},ou=groups,{SUFFIX}"                      # noqa: E731
        for i, team in enumerate(teams):
            members = [f"uid={u},ou=people,{SUFFIX}" for u in logins[i::len(teams)]]
            ldif += group_ldif("groups", team, member_dns=members + ([dn("amt-nested")] if i == 0 else []))
        for d in range(args.divisions):
            ldif += group_ldif("groups", f"division-{d}", member_dns=[dn(f"team-{d}-{t}") for t in range(args.teams)])
        ldif += group_ldif("groups", "amt-nested", member_dns=[dn(f"division-{d}") for d in range(args.divisions)])
        t = time.perf_counter()
        server = Slapd(ldif).start()
        print(f"slapd loaded with {args.users} users (slapadd + start): {time.perf_counter() - t:.2f} s")
        try:
            os.environ["BENCH_LDAP_PW"] = server.admin_password
            base = {"name": "bench", "work_dir": str(tmp / "work"),
                    "sources": [{"name": "homes", "type": "folder", "root": str(tmp / "home")}],
                    "target": {"type": "localdir", "root": str(tmp / "target")}}
            ldap_file = tmp / "ldap.yaml"
            ldap_file.write_text(yaml.safe_dump({**base, "users_from": {"ldap": {
                "url": server.url, "bind_dn": ADMIN_DN, "password": "env:BENCH_LDAP_PW",
                "base": f"ou=people,{SUFFIX}", "group": f"cn=amt,ou=groups,{SUFFIX}",
                "target_attr": "sAMAccountName"}}}))
            dept0 = load_department(ldap_file)
            seconds, dept = best(args.rounds, lambda: resolve_users(dept0))
            assert len(dept.users) == args.users
            print(f"resolve from LDAP (OU paged + group): {seconds:.2f} s for {len(dept.users)} users")
            nested_file = tmp / "nested.yaml"
            nested_file.write_text(yaml.safe_dump({**base, "users_from": {"ldap": {
                "url": server.url, "bind_dn": ADMIN_DN, "password": "env:BENCH_LDAP_PW",
                "base": f"ou=people,{SUFFIX}", "group": f"cn=amt-nested,ou=groups,{SUFFIX}",
                "target_attr": "sAMAccountName"}}}))
            nested0 = load_department(nested_file)
            seconds, nested = best(args.rounds, lambda: resolve_users(nested0))
            assert [u.source for u in nested.users] == [u.source for u in dept.users]
            print(f"resolve through nested groups (1 + {args.divisions} + {len(teams)} groups, one cycle): "
                  f"{seconds:.2f} s for {len(nested.users)} users")
            seconds, checks = best(args.rounds, lambda: check_identities(dept))
            ok = sum(c.problem is None for c in checks)
            assert ok == args.users, [c.row() for c in checks if c.problem][:3]
            print(f"identity check (source folder, target folder): {seconds:.2f} s, {ok} of {len(checks)} go")
            csv_path = tmp / "people.csv"
            csv_path.write_text("source;target;email;display_name\n" + "".join(
                f"{u.source};{u.target};{u.email};{u.display_name}\n" for u in dept.users), encoding="cp1252")
            csv_file = tmp / "csv.yaml"
            csv_file.write_text(yaml.safe_dump({**base, "users_from": {"csv": str(csv_path)}}))
            seconds, from_csv = best(args.rounds, lambda: load_department(csv_file))
            assert len(from_csv.users) == args.users
            print(f"the same users from a CSV export (load_department): {seconds:.2f} s")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
