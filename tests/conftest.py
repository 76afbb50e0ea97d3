"""Shared fixtures: the developer corpus, generated documents, a real LibreOffice pool."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import psutil
import pytest

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"

# Every pool the tests start keeps its profiles under this directory, so the end of the session
# can prove that no LibreOffice process of ours survived.
RUNTIME_BASE = Path(tempfile.mkdtemp(prefix="umstieg-test-runtime-"))

# Prefect: an ephemeral server with its own database per test session, quiet, no telemetry.
os.environ["PREFECT_HOME"] = str(RUNTIME_BASE / "prefect-home")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")


def processes_using(marker: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line mentions `marker`."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


def pytest_sessionfinish(session, exitstatus):
    leftovers = processes_using(str(RUNTIME_BASE))
    if leftovers:
        for p in leftovers:
            p.kill()
        session.exitstatus = 1
        print(f"\nFAILED: {len(leftovers)} LibreOffice/worker process(es) outlived the tests: "
              + ", ".join(f"{p.pid} {p.name()}" for p in leftovers))


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The developer corpus (../shared/corpus); tests that need it skip when it is absent."""
    if not CORPUS.is_dir():
        pytest.skip(f"corpus tests skipped: {CORPUS} not found (the developer corpus is not on this machine)")
    return CORPUS


def runtime_dir(name: str) -> Path:
    path = RUNTIME_BASE / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def pool():
    """Two real LibreOffice workers shared by the tests that do not break workers on purpose."""
    from converters.pool import ConverterPool
    from core.settings import ConversionSettings

    with ConverterPool(ConversionSettings(workers=2, timeout=150, runtime_dir=runtime_dir("shared"))) as p:
        yield p


@pytest.fixture
def env_without_proxy():
    """A copy of the environment with no proxy variables (for control runs of plain soffice)."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
