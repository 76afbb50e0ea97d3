"""What the dashboard tests share: a department migrated for real, the dashboard served on
loopback, and headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

The department: anna has a Word, an Excel and a PowerPoint file and a text file; ben has one Word
file whose target folder is blocked by a file, so it fails with `load_error` until the blocking
file is removed (the cause an operator fixes before a rerun). The risk scan and the assessment
are written by the assess flow first, as `umstieg assess` does; the first page thumbnails of anna's Word document
are rendered by the visual fidelity tier (reports/fidelity.py) with the migration's own pool.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from servers import free_port

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / ".cache" / "npm" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"


@dataclass
class Migrated:
    """A department after one real migration: its file, folders and the item ids the tests use."""

    dept_file: Path
    tmp: Path
    blocker: Path                # the file in ben's target folder's way
    docx_id: int                 # anna's converted Word document (has thumbnails)
    failed_id: int               # ben's failed item

    def fix_failure(self) -> None:
        self.blocker.unlink()


def migrate_small_department(tmp: Path, name: str = "testamt") -> Migrated:
    from docgen import make_mixed_set

    home = tmp / "home"
    make_mixed_set(home / "anna" / "Ablage", 3)
    (home / "anna" / "notes.txt").write_text("Notizen von anna\n", encoding="utf-8")
    make_mixed_set(home / "ben", 1)
    (tmp / "target").mkdir(parents=True)
    blocker = tmp / "target" / "t-ben"
    blocker.write_text("in the way")
    config = {"name": name, "work_dir": str(tmp / "work"),
              "users": [{"source": u, "target": f"t-{u}"} for u in ("anna", "ben")],
              "sources": [{"name": "homes", "type": "folder", "root": str(home)}],
              "target": {"type": "localdir", "root": str(tmp / "target")},
              "conversion": {"workers": 1, "timeout": 120, "keep_original": "always"},
              "limits": {"chunk_size": 4}}
    dept_file = tmp / "department.yaml"
    dept_file.write_text(yaml.safe_dump(config), encoding="utf-8")

    from core.department import load_department
    from core.ledger import Item
    from flows import runtime
    from flows.migrate import assess_body as assess, migrate_body as migrate
    from reports.migration import reports_dir
    from sqlalchemy import select

    assess(str(dept_file))            # the risk scan and inventory, as `umstieg assess` writes them
    migrate(str(dept_file))
    dept = load_department(dept_file)
    ledger = runtime.ledger(dept)
    with ledger.session() as s:
        items = {(i.owner, i.location): i for i in s.scalars(select(Item).where(Item.department == name))}
    docx = items[("anna", "Ablage/doc000.docx")]
    failed = next(i for (owner, _), i in items.items() if owner == "ben")
    assert docx.conversion == "converted" and failed.state == "failed", (docx.conversion, failed.state)
    _thumbnails(dept, docx, home / "anna" / docx.location, reports_dir(dept) / "thumbs")
    return Migrated(dept_file, tmp, blocker, docx.id, failed.id)


def _thumbnails(dept, item, source: Path, thumbs: Path) -> None:
    """The first-page pictures of one converted document, as the visual fidelity tier draws them."""
    from converters.formats import FORMATS
    from flows import runtime
    from reports.fidelity import assess
    record = assess(source, Path(item.target_ref), FORMATS["docx"], render=runtime.converter_pool(dept).render_pdf,
                    visual=True, thumbs=thumbs, key=item.sha256[:16])
    assert (record.visual or {}).get("thumbnails"), record.visual


class DashboardServer:
    """`umstieg dashboard` in its own process on a loopback port (stopped with its process group)."""

    def __init__(self, dept_file: Path, users_file: Path | None, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "umstieg", "dashboard", str(dept_file), "--port", str(self.port)]
        if users_file:
            cmd += ["--users", str(users_file)]
        self._log = open(log, "wb")
        self.process = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True, env=dict(os.environ))
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/healthz", timeout=2)
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"the dashboard did not start: {log.read_text(errors='replace')[-2000:]}") from None
                time.sleep(0.3)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def users_file(path: Path, accounts: dict[str, tuple[str, str]]) -> Path:
    """A users file with these logins: {login: (role, password)}."""
    from umstieg.dashboard.auth import hash_password
    path.write_text(yaml.safe_dump({"users": {name: {"role": role, "password_hash": hash_password(pw)}
                                              for name, (role, pw) in accounts.items()}}), encoding="utf-8")
    return path


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} not found: install Debian's {package} (bin/setup)"
    if not AXE.is_file():
        return f"{AXE} not found: run bin/setup (npm install axe-core into .cache/npm)"
    return None


def chromium(download_dir: Path):
    """Headless Chromium through Debian's chromedriver (no browser download, no selenium-manager)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--lang=en-GB"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                              "download.prompt_for_download": False,
                                              "intl.accept_languages": "en-GB,en"})
    service = Service(executable_path=str(CHROMEDRIVER))
    return webdriver.Chrome(options=options, service=service)


def axe_violations(driver) -> list[dict]:
    """axe-core's violations of the current page (WCAG 2.1 A/AA rules and best practices), of any impact."""
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', "
        "values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"
        ".then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))})))).catch(e => done([{id: 'axe-error',"
        " impact: 'critical', help: String(e), nodes: []}]));")
    return result                      # every impact: minor and moderate ones count too


def clean_artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
