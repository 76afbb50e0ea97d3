"""CalDAV load throughput: events per second into Radicale, through the sink and as raw PUTs.

For the same generated events (a third of them weekly series with a moved and a cancelled
occurrence, all with three attendees), each run into a fresh calendar of a Radicale on loopback:

- (a) raw: one `PUT <calendar>/<uid>.ics` per event with httpx (same client, `If-None-Match: *`,
  calendar made beforehand) — what the protocol costs by itself;
- (b) sink: the whole load step of a migration — `digest` (the fingerprint), `find` (GET),
  `put` (create-only PUT), then `verify` (GET and fingerprint again);

with 1 and 4 threads, printing events/s, the ratio (b)/(a) and the median of `--rounds` runs.

    .venv/bin/python benchmarks/dav_events.py [--events 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import httpx  # noqa: E402

from core.department import CalDavTarget  # noqa: E402
from servers.radicale import RadicaleServer  # noqa: E402
from sinks.groupware import CalDav  # noqa: E402

USER, PASSWORD = "anna", "bench-pw"


def make_events(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    people = "".join(f"ATTENDEE;CN=P{i}:mailto:p{i}@amt.example\r\n" for i in range(3))
    for i in range(count):
        uid = f"bench-{i:05d}@amt.example"
        day = 5 + i % 20
        series = (f"RRULE:FREQ=WEEKLY;COUNT=30\r\nEXDATE;TZID=Europe/Berlin:202602{day:02d}T090000\r\n"
                  if i % 3 == 0 else "")
        moved = (f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260101T000000Z\r\n"
                 f"RECURRENCE-ID;TZID=Europe/Berlin:202601{day + 7:02d}T090000\r\n"
                 f"DTSTART;TZID=Europe/Berlin:202601{day + 7:02d}T140000\r\nSUMMARY:Termin {i} (verschoben)\r\n"
                 f"{people}END:VEVENT\r\n" if i % 3 == 0 else "")
        text = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//umstieg bench//EN\r\n"
                "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\n"
                "TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nEND:STANDARD\r\n"
                "BEGIN:DAYLIGHT\r\nDTSTART:19700329T020000\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\n"
                "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n"
                f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260101T000000Z\r\n"
                f"DTSTART;TZID=Europe/Berlin:202601{day:02d}T090000\r\n"
                f"DTEND;TZID=Europe/Berlin:202601{day:02d}T100000\r\n"
                f"SUMMARY:Termin {i}\r\nDESCRIPTION:{'Tagesordnung ' * (i % 40)}\r\n{series}{people}END:VEVENT\r\n"
                f"{moved}END:VCALENDAR\r\n")
        path = folder / f"{i:05d}.ics"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def run_raw(server: RadicaleServer, events: list[Path], threads: int) -> float:
    calendar = f"{server.url}/{USER}/raw-{uuid.uuid4().hex[:8]}/"
    with httpx.Client(auth=(USER, PASSWORD), timeout=60) as client:
        assert client.request("MKCALENDAR", calendar).status_code == 201
        def put(path: Path) -> None:
            uid = f"bench-{int(path.stem):05d}@amt.example"
            resp = client.put(calendar + uid + ".ics", content=path.read_bytes(),
                              headers={"If-None-Match": "*", "Content-Type": "text/calendar; charset=utf-8"})
            assert resp.status_code == 201, resp.status_code
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(put, events))
        return len(events) / (time.perf_counter() - started)


def run_sink(server: RadicaleServer, events: list[Path], threads: int) -> float:
    sink = CalDav(CalDavTarget(url=server.url, app_passwords={USER: "env:BENCH_DAV_PW"}, timeout=60))
    calendar = f"Bench {uuid.uuid4().hex[:8]}"
    sink.check([USER])
    def load(path: Path) -> None:
        digest = sink.digest(path)
        ref = sink.find(USER, calendar, digest) or sink.put(USER, calendar, path)
        problem = sink.verify(ref, digest)
        assert problem is None, problem
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(load, events))
    rate = len(events) / (time.perf_counter() - started)
    sink.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ["BENCH_DAV_PW"] = PASSWORD
    with tempfile.TemporaryDirectory(prefix="umstieg-bench-dav-") as tmp:
        events = make_events(Path(tmp) / "events", args.events)
        size = sum(p.stat().st_size for p in events) / len(events)
        print(f"{len(events)} events, {size / 1024:.1f} KiB on average, Radicale on loopback, "
              f"median of {args.rounds} rounds")
        print(f"{'threads':>7} | {'(a) raw PUT ev/s':>16} | {'(b) sink load+verify ev/s':>25} | {'(b)/(a)':>7}")
        with RadicaleServer(Path(tmp) / "radicale", {USER: PASSWORD}) as server:
            for threads in (1, 4):
                raws, sinks = [], []
                for _ in range(args.rounds):            # interleaved: drift of a shared machine hits both alike
                    raws.append(run_raw(server, events, threads))
                    sinks.append(run_sink(server, events, threads))
                raw, sink = statistics.median(raws), statistics.median(sinks)
                print(f"{threads:>7} | {raw:>16.1f} | {sink:>25.1f} | {sink / raw:>7.2f}")


if __name__ == "__main__":
    main()
