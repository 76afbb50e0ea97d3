"""`umstieg assess` at scale (issue 19): the inventory counts what the sources list as it streams
past and holds no item, so its memory does not grow with the department. Shown by counting bytes
(tracemalloc's peak), not by timing; the figures at 60,000 to a million files are in
benchmarks/assess_scale.py and docs/benchmarks.md."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from core.department import load_department
from core.items import ItemRef, Kind
from reports.migration import Inventory, file_format, mail_volume, write_assessment

FORMATS = ("pdf", "txt", "jpg", "docx", "xlsx", "csv", "log", "")


def listing(n: int, users: tuple[str, ...] = ("anna", "ben", "cem")) -> Iterator[tuple[str, ItemRef]]:
    """An in-memory source of `n` items, made one at a time as a source lists them: mostly files in
    folders of a hundred, every tenth a message in one of a few mail folders, a calendar now and then."""
    for i in range(n):
        user = users[i % len(users)]
        if i % 10 == 3:
            folder = ("INBOX", "Akten", "Sent")[(i // 30) % 3]
            yield user, ItemRef("mail", f"{user}/{folder}/{i}", Kind.MESSAGE, user, folder, "1", 1000 + i % 7,
                                {"target_folder": "Archiv"} if folder == "Akten" else None)
        elif i % 50 == 7:
            yield user, ItemRef("mail", f"{user}/cal/{i}", Kind.EVENT, user, "Kalender", "1", 300)
        else:
            ext = FORMATS[i % len(FORMATS)]
            path = f"akte{i // 10_000:03d}/vorgang{(i // 100) % 100:02d}/dok{i:07d}" + (f".{ext}" if ext else "")
            yield user, ItemRef("homes", f"{user}/{path}", Kind.FILE, user, path, f"{i}:{i % 4096}", i % 4096)


def department(tmp_path: Path):
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump({
        "name": "gross", "work_dir": str(tmp_path / "work"), "users": [{"source": "anna", "target": "anna"}],
        "sources": [{"name": "homes", "type": "folder", "root": str(tmp_path / "home")}],
        "target": {"type": "localdir", "root": str(tmp_path / "target")}}), encoding="utf-8")
    (tmp_path / "home").mkdir()
    dept = load_department(path)
    (tmp_path / "work" / "reports").mkdir(parents=True, exist_ok=True)
    return dept


def peak_bytes(work: Callable[[], object]) -> int:
    """The most memory `work` held at once, above what was held before it started."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        work()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_the_assessment_holds_counters_not_items(tmp_path):
    """Four times the items, the same memory: the assessment of 40,000 listed items peaks within
    a fixed bound of that of 10,000, while holding the 30,000 more items would cost megabytes."""
    dept = department(tmp_path)
    n = 10_000
    write_assessment(dept, [], None, listing(500))                   # modules and caches loaded once
    results: dict[int, dict] = {}

    def assess(count: int) -> Callable[[], object]:
        return lambda: results.__setitem__(count, write_assessment(dept, [], None, listing(count)))
    small, large = peak_bytes(assess(n)), peak_bytes(assess(4 * n))
    held = peak_bytes(lambda: list(listing(3 * n)))                   # what a list of the difference costs
    bound = 256 * 1024
    assert held > 20 * bound                                          # the bound tells holding from counting
    assert large - small < bound, (small, large, held)
    # and it counted every item
    whole = results[4 * n]
    assert whole["items"] == 4 * n and sum(whole["by_user"].values()) == 4 * n
    assert whole["by_kind"]["message"] == sum(1 for i in range(4 * n) if i % 10 == 3)
    assert sum(v["items"] for v in whole["by_format"].values()) == whole["by_kind"]["file"]
    assert whole["mail_selected_messages"] == whole["by_kind"]["message"]
    assert json.loads(Path(whole["report"]).read_text(encoding="utf-8"))["items"] == 4 * n


def test_an_inventory_counted_in_parts_is_the_inventory_counted_whole(tmp_path):
    """assess_body counts each user's listing apart and merges it once the listing is whole: the
    result, down to the order of its keys and the renamed mail folders, is that of one pass."""
    dept = department(tmp_path)
    items = list(listing(3_000))
    whole = write_assessment(dept, [], None, iter(items))
    report = Path(whole["report"]).read_bytes()
    merged = Inventory()
    for user in ("cem", "anna", "ben"):                               # another order than the listing's
        part = Inventory.of(pair for pair in items if pair[0] == user)
        merged.merge(part)
    in_parts = write_assessment(dept, [], None, merged)
    assert list(in_parts["by_user"]) == ["cem", "anna", "ben"]
    assert {k: v for k, v in in_parts.items() if k != "by_user"} == {k: v for k, v in whole.items() if k != "by_user"}
    assert in_parts["by_user"] == whole["by_user"]
    one_by_one = Inventory()
    for user, ref in items:                                           # one part per item: the listing's order
        part = Inventory()
        part.add(user, ref)
        one_by_one.merge(part)
    write_assessment(dept, [], None, one_by_one)
    assert Path(whole["report"]).read_bytes() == report
    rows = {(r["user"], r["folder"]): r for r in whole["mail"]}
    assert rows[("anna", "Akten")]["target_folder"] == "Archiv" and rows[("anna", "INBOX")]["target_folder"] is None
    assert whole["mail"] == mail_volume(iter(items))
    # a server's own counts stand beside what the listing selected
    [inbox] = [r for r in mail_volume(iter(items), [("anna", "mail", {"folder": "INBOX", "messages": 999,
                                                                      "bytes": 5})]) if r["user"] == "anna"
               and r["folder"] == "INBOX"]
    assert (inbox["messages"], inbox["bytes"]) == (999, 5) and inbox["selected_messages"] == rows[("anna", "INBOX")][
        "selected_messages"]


def test_a_file_format_is_its_name_suffix_as_pathlib_reads_it():
    """file_format is written out for speed: it must name every location as PurePosixPath does,
    odd ones included (dots only, trailing slashes, `.` parts, a leading dot)."""
    import random
    from pathlib import PurePosixPath
    rnd = random.Random(19)
    odd = ["", ".", "..", "a.", ".bashrc", "..x", "a/b/.", "a/./b.PDF", "a.tar.GZ", "dir.d/", "//x.y//", "x.y/.",
           "Ä.DOCX", "noext", "a/b.c/d"]
    samples = odd + ["".join(rnd.choice("ab./X") for _ in range(rnd.randint(0, 9))) for _ in range(5000)]
    for location in samples:
        assert file_format(location) == (PurePosixPath(location).suffix.lower().lstrip(".") or "(none)"), location
