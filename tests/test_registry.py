"""The registry of sources and sinks (core/plugins.py): the department model is built from it, the
flows dispatch through it, optional abilities are declared protocols, and a department loads only
the client libraries of the systems it configures."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from core import plugins
from core.department import Department, load_department
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

#: Client libraries a department of folders must never load (nor the department model itself).
HEAVY = ("smbprotocol", "smbclient", "boto3", "botocore", "exchangelib", "imapclient", "icalendar", "httpx", "msal")


def folder_department(tmp_path: Path) -> Path:
    (tmp_path / "home" / "anna").mkdir(parents=True)
    (tmp_path / "home" / "anna" / "Notiz.txt").write_text("Sitzung am Montag\n", encoding="utf-8")
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump({
        "name": "ordner", "work_dir": str(tmp_path / "work"), "users": [{"source": "anna", "target": "t-anna"}],
        "sources": [{"name": "homes", "type": "folder", "root": str(tmp_path / "home")}],
        "target": {"type": "localdir", "root": str(tmp_path / "target")}}), encoding="utf-8")
    return path


def test_a_department_of_folders_loads_no_client_library(tmp_path):
    """In a fresh interpreter: load the department, make its source and target, list and check them."""
    dept_file = folder_department(tmp_path)
    program = f"""
import json, sys
from core.department import load_department
from flows.systems import source_of, target_of
dept = load_department({str(dept_file)!r})
source, sink = source_of(dept, "homes"), target_of(dept)
listed = [ref.location for ref in source.discover("anna", "anna")]
problems = sink.check(["t-anna"])
print(json.dumps({{"listed": listed, "kinds": [type(source).__name__, type(sink).__name__],
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}),
                  "systems": sorted(m for m in sys.modules if m.split(".")[0] in ("sources", "sinks"))}}))
"""
    result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["listed"] == ["Notiz.txt"] and seen["kinds"] == ["FolderShare", "LocalDir"]
    assert seen["loaded"] == []
    # the other systems' code is not even imported: only their light configuration modules
    code = [m for m in seen["systems"] if m not in ("sources", "sinks") and not m.endswith("_config")]
    assert sorted(code) == ["sinks.localdir", "sources.fileshare"]


def test_every_registered_model_is_light_and_names_its_type():
    """Each configuration module imports no client library (checked in a fresh interpreter, module
    by module), and the model's `type` is the one it is registered under."""
    modules = sorted({s.config.partition(":")[0] for s in plugins.SYSTEMS})
    program = f"""
import importlib, json, sys
loaded = {{}}
for name in {modules!r}:
    importlib.import_module(name)
    loaded[name] = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print(json.dumps(loaded))
"""
    result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {m: [] for m in modules}
    for system in plugins.SYSTEMS:
        model = system.model()
        assert issubclass(model, BaseModel)
        assert model.model_fields["type"].default == system.type
        assert callable(plugins._load(system.factory)), system.factory


def test_a_model_registered_under_the_wrong_type_is_refused_loudly():
    wrong = plugins.System("smbx", "source", "sources.smb_config:SmbSource", "sources.smb:source_for")
    with pytest.raises(plugins.UnknownSystem, match="registered as type 'smbx'.*says 'smb'"):
        wrong.model()


def test_the_department_model_is_built_from_the_registry():
    for role in plugins.ROLES:
        annotation = Department.model_fields["sources" if role == "source" else role].annotation
        found = {m for m in _models_in(annotation)}
        assert found == set(plugins.models(role)), role
    from core.department import FILE_SOURCE_TYPES
    assert set(FILE_SOURCE_TYPES) == {"folder", "smb", "s3", "onedrive", "sharepoint"}
    assert {s.type for s in plugins.registered(sources=False)} == {
        "localdir", "nextcloud", "oxdrive", "imap", "caldav", "carddav", "s3"}


def _models_in(annotation) -> set[type]:
    import typing
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {annotation}
    return {m for arg in typing.get_args(annotation) for m in _models_in(arg)}


def test_a_wrong_type_names_every_registered_type_with_its_line(tmp_path):
    dept_file = folder_department(tmp_path)
    data = yaml.safe_load(dept_file.read_text())
    data["sources"].append({"name": "laufwerk", "type": "gdrive", "root": "x"})
    data["target"] = {"type": "owncloud", "url": "https://cloud.example"}
    dept_file.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as exc:
        load_department(dept_file)
    lines = str(exc.value).splitlines()[1:]
    assert len(lines) == 2
    sources = ", ".join(f"'{s.type}'" for s in plugins.registered("source"))
    targets = ", ".join(f"'{s.type}'" for s in plugins.registered("target"))
    text = yaml.safe_dump(data, sort_keys=False).splitlines()
    gdrive_line = next(i for i, line in enumerate(text, 1) if "laufwerk" in line)
    assert lines[0].strip().startswith(f"{dept_file}:{gdrive_line}: sources.1: Input tag 'gdrive'")
    assert lines[0].endswith(f"expected tags: {sources}")
    assert ": target: Input tag 'owncloud'" in lines[1] and lines[1].endswith(f"expected tags: {targets}")


def test_the_old_import_path_of_a_model_still_works():
    from core.department import ImapOAuth, NextcloudTarget, SmbSource
    from sinks.webdav_config import NextcloudTarget as Moved
    from sources.imap_config import ImapOAuth as MovedOAuth
    from sources.smb_config import SmbSource as MovedSmb
    assert (NextcloudTarget, SmbSource, ImapOAuth) == (Moved, MovedSmb, MovedOAuth)
    with pytest.raises(ImportError):
        from core.department import GoogleDriveSource  # noqa: F401


def test_system_of_knows_only_registered_models(tmp_path):
    dept = load_department(folder_department(tmp_path))
    assert plugins.system_of(dept.sources[0]).factory == "sources.fileshare:FolderShare"
    assert plugins.system_of(dept.target).type == "localdir"
    with pytest.raises(plugins.UnknownSystem, match="Conversion"):
        plugins.system_of(dept.conversion)


def test_optional_abilities_are_declared_protocols(tmp_path):
    """What each system can do beyond Source / Sink, as the flows ask it (isinstance)."""
    from sinks.groupware import CalDav, CardDav
    from sinks.imap import ImapSink
    from sinks.localdir import LocalDir
    from sinks.s3 import S3Archive
    from sinks.webdav import Nextcloud, OXDrive
    from sources.export import ExportFiles
    from sources.fileshare import FolderShare
    from sources.fileshare_config import FolderSource
    from sources.imap import ImapMailboxes
    from sources.m365 import MailboxSource
    from sources.onedrive import DriveSource
    from sources.smb import SmbShare
    p = plugins
    assert issubclass(ImapMailboxes, p.FetchesMessages) and issubclass(ImapSink, p.AppendsMessages)
    assert not issubclass(MailboxSource, p.FetchesMessages) and not issubclass(Nextcloud, p.AppendsMessages)
    assert issubclass(ImapMailboxes, p.ListsMailFolders) and not issubclass(ExportFiles, p.ListsMailFolders)
    assert all(issubclass(c, p.CountsMail) for c in (ImapMailboxes, MailboxSource, ExportFiles))
    assert not issubclass(DriveSource, p.CountsMail)
    assert issubclass(Nextcloud, p.SharesFiles) and not issubclass(OXDrive, p.SharesFiles)
    assert all(issubclass(c, p.ProbesUsers) for c in (Nextcloud, ImapSink, CalDav, CardDav))
    assert not issubclass(LocalDir, p.ProbesUsers) and not issubclass(S3Archive, p.ProbesUsers)
    assert issubclass(ExportFiles, p.ListsCalendars) and issubclass(CalDav, p.ChecksCalendars)
    assert not issubclass(CardDav, p.ChecksCalendars)
    # a protocol with a declared attribute is asked of instances
    folder = FolderShare(FolderSource(name="homes", root=tmp_path))
    assert isinstance(folder, p.ComparesWithListing) and folder.compares_with_listing
    assert SmbShare.compares_with_listing is True and not hasattr(DriveSource, "compares_with_listing")


def test_every_sink_takes_the_digest_it_must_write():
    """`put(..., digest=)` on every sink class of every registered sink module."""
    checked = []
    for system in plugins.registered(sources=False):
        module = importlib.import_module(system.factory.partition(":")[0])
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and callable(getattr(cls, "put", None)):
                assert "digest" in inspect.signature(cls.put).parameters, f"{module.__name__}.{name}.put"
                checked.append(name)
    assert {"LocalDir", "Nextcloud", "OXDrive", "ImapSink", "S3Archive"} <= set(checked)
