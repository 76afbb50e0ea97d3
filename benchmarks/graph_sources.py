"""Graph sources (OneDrive files, Microsoft 365 mail) against the Graph test server, side by side
with a baseline.

Prints, for one drive of N files and one mailbox of M messages:
  (a) baseline: plain httpx with a token, the same delta pages and downloads one after another;
  (b) DriveSource.discover (delta + path rebuilding) and extract with 1 thread;
  (c) extract with `concurrency` threads (Graph allows 4 per mailbox);
  (d) MailboxSource.discover and extract of the messages' MIME with 4 threads,
with files/s and the ratios (b)/(a), (c)/(a). The test server answers each Graph request after
`--latency` seconds (Graph itself takes 50-300 ms), so concurrency shows as it would against Graph.

    .venv/bin/python benchmarks/graph_sources.py [--files 400] [--messages 200] [--latency 0.02]

Figures depend on the machine and on what else runs on it: compare runs on one machine, and read
the ratios rather than the absolute rates.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from core.department import M365Source, OneDriveSource  # noqa: E402
from servers.graph import GraphTestServer  # noqa: E402
from sources.graph import GraphClient  # noqa: E402
from sources.m365 import MailboxSource  # noqa: E402
from sources.onedrive import DriveSource  # noqa: E402

UPN = "bench@contoso.example"


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.1f}/s ({count} in {seconds:.2f} s)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    os.environ["GRAPH_BENCH_SECRET"] = "bench-secret"
    with tempfile.TemporaryDirectory() as tmp, \
            GraphTestServer(Path(tmp), client_secret="bench-secret", page_size=200) as server:
        work = Path(tmp)
        drive = server.add_user(UPN)
        for i in range(args.files):
            server.put_file(drive, f"Ordner{i % 20}/Datei{i}.bin", os.urandom(20_000 + (i % 7) * 10_000))
        box = server.add_mailbox(UPN)
        for i in range(args.messages):
            server.put_message(box, box.well_known["inbox"], (f"Subject: {i}\r\n\r\n" + "x" * 5000).encode())
        server.delay = args.latency
        common = dict(tenant_id=server.tenant, client_id=server.client_id, client_secret="env:GRAPH_BENCH_SECRET",
                      authority=server.authority, graph_url=server.graph_url, ca_file=server.ca_file)

        # (a) baseline: the same requests with plain httpx, one after another
        od_cfg = OneDriveSource(name="od", concurrency=args.concurrency, **common)
        token = GraphClient(od_cfg).token()
        started = time.monotonic()
        ctx = ssl.create_default_context(cafile=str(server.ca_file))
        with httpx.Client(verify=ctx, headers={"Authorization": f"Bearer {token}"}) as plain, \
                httpx.Client(verify=ctx) as anonymous:
            url, entries = f"{server.graph_url}/drives/{drive.id}/root/delta", []
            while url:
                body = plain.get(url).json()
                entries += body["value"]
                url = body.get("@odata.nextLink")
            files = [e for e in entries if "file" in e]
            for e in files:
                loc = plain.get(f"{server.graph_url}/drives/{drive.id}/items/{e['id']}/content").headers["Location"]
                (work / "a" / e["id"]).parent.mkdir(parents=True, exist_ok=True)
                (work / "a" / e["id"]).write_bytes(anonymous.get(loc).content)
        baseline = time.monotonic() - started
        print(f"(a) baseline httpx, sequential      {_rate(len(files), baseline)}")

        # (b) the source, one thread
        src = DriveSource(od_cfg, client=GraphClient(od_cfg))
        started = time.monotonic()
        refs = list(src.discover(UPN, UPN))
        listed = time.monotonic() - started
        for r in refs:
            src.extract(UPN, r.location, work / "b" / r.location, key=r.key)
        one = time.monotonic() - started
        print(f"(b) DriveSource, 1 thread           {_rate(len(refs), one)}   discover alone {listed:.2f} s"
              f"   ratio b/a {baseline / one:.2f}")

        # (c) the source, `concurrency` threads
        started = time.monotonic()
        with ThreadPoolExecutor(args.concurrency * 2) as pool:
            list(pool.map(lambda r: src.extract(UPN, r.location, work / "c" / r.location, key=r.key), refs))
        many = time.monotonic() - started
        print(f"(c) DriveSource, {args.concurrency * 2} threads, gate {args.concurrency}  {_rate(len(refs), many)}"
              f"   ratio c/a {baseline / (many + listed):.2f}   most requests at once: {server.max_in_flight}")

        # (d) mail
        mcfg = M365Source(name="exo", calendars=False, contacts=False, concurrency=args.concurrency, **common)
        mail = MailboxSource(mcfg, client=GraphClient(mcfg))
        started = time.monotonic()
        mrefs = list(mail.discover(UPN, UPN))
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(lambda r: mail.extract(UPN, r.location, work / "d" / f"{r.key}.eml", key=r.key), mrefs))
        took = time.monotonic() - started
        print(f"(d) MailboxSource, {args.concurrency} threads        {_rate(len(mrefs), took)}")


if __name__ == "__main__":
    main()
