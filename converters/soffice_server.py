"""The program each local LibreOffice worker runs: unoserver's XML-RPC server, hardened.

Started by the pool as `python -m converters.soffice_server ...` in a process group of its own; it starts
one `soffice` with its own user profile and UNO port, and serves unoserver's XML-RPC API on its
own port, so unoserver's client talks to it unchanged.

What it changes in unoserver 3.7, and why:
- Every document is loaded without a view: into a bare document model when the import filter is
  known (the pool always names it), hidden otherwise. With LibreOffice 7.4.7, unoserver's visible
  load crashes LibreOffice (signal 6) on every .xlsx, and even a hidden view crashes it on Word
  documents with comments (the comment windows are built asynchronously while unoserver's thread
  is still loading); a document model with no view avoids both, and is faster.
- Every document is loaded with `MacroExecutionMode=NEVER_EXECUTE` and `UpdateDocMode=NO_UPDATE`,
  and the profile forbids macros and points every network access at a dead proxy: documents are
  untrusted, LibreOffice must neither run their code nor fetch what they link.
- unoserver's own start-up sleeps a fixed 7 s; here LibreOffice is started directly and the
  server binds as soon as the UNO bridge answers.
- The worker exits as soon as LibreOffice dies or the pool that started it goes away, so the pool
  can treat "process gone" as "worker dead" and no `soffice` outlives its pool.
- Load options unoserver's API has no place for travel as export filter options named
  `umstieg-load:NAME=VALUE` (a plain unoserver passes them to the export filter, which ignores
  them): `RepairPackage=true` loads a damaged package with LibreOffice's repair, and
  `RefusePlainText=true` refuses a load that LibreOffice's type detection could only turn into
  plain text (its last resort for bytes it recognises as nothing). Without an import filter, the
  worker runs LibreOffice's type detection itself, so that such a document, too, loads into a bare
  model; the filter a document was loaded with is written beside the output, as
  `<output>.umstieg-load.json`, for the pool to report.
- LibreOffice's load errors name its C++ sources ("at ./sfx2/source/doc/sfxbasemodel.cxx:1812");
  the worker raises them as one plain sentence instead.

This module must run under a Python that can `import uno` (Debian's /usr/bin/python3, or a venv
made from it with --system-site-packages); it is never imported by the pool itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("umstieg.worker")

#: Prefix of the load options passed among the export filter options (see the module docstring).
LOAD_OPTION = "umstieg-load:"
#: Suffix of the file, beside the output, that names the import filter used and whether it repaired.
LOAD_REPORT = ".umstieg-load.json"
#: Import filters that take any bytes as plain text (converters.formats.PLAIN_TEXT_FILTERS; this
#: module runs under another Python and imports nothing from the project).
_PLAIN_TEXT = frozenset({"Text", "Text (encoded)", "Text - txt - csv (StarCalc)", "Text (StarWriter/Web)",
                         "Text (encoded) (StarWriter/Web)"})

# com.sun.star.document.MacroExecMode.NEVER_EXECUTE and UpdateDocMode.NO_UPDATE
_NEVER_EXECUTE = 0
_NO_UPDATE = 0

# Link update modes that mean "never" (see PROFILE_SETTINGS)
WRITER_LINKS_NEVER = 0
CALC_LINKS_NEVER = 1

# A port on loopback where nothing listens: LibreOffice's HTTP/FTP access goes there and fails.
DEAD_PROXY_PORT = 9

_REGISTRY = """<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
{items}
</oor:items>
"""


def _item(path: str, name: str, type_: str, value: str) -> str:
    return (f'<item oor:path="{path}"><prop oor:name="{name}" oor:op="fuse">'
            f'<value>{value}</value></prop></item>')


#: Profile settings written before LibreOffice first starts (registrymodifications.xcu).
PROFILE_SETTINGS = [
    # macros: highest security level and execution disabled altogether
    ("/org.openoffice.Office.Common/Security/Scripting", "MacroSecurityLevel", "int", "3"),
    ("/org.openoffice.Office.Common/Security/Scripting", "DisableMacrosExecution", "boolean", "true"),
    ("/org.openoffice.Office.Common/Security/Scripting", "BlockUntrustedRefererLinks", "boolean", "true"),
    # links: never update links to other files or the web while loading. The two applications
    # number their modes differently: Writer's are sw/inc/linkenum.hxx `UpdateLinks` (NEVER=0,
    # MANUAL=1, AUTOMATIC=2, GLOBALSETTING=3; the shipped default is 1, "on request"), Calc's
    # are sc/inc/global.hxx `ScLkUpdMode` (LM_ALWAYS=0, LM_NEVER=1, LM_ON_DEMAND=2; default 2).
    ("/org.openoffice.Office.Writer/Content/Update", "Link", "int", str(WRITER_LINKS_NEVER)),
    ("/org.openoffice.Office.Calc/Content/Update", "Link", "int", str(CALC_LINKS_NEVER)),
    # network: every HTTP/HTTPS/FTP access goes through a proxy that does not exist, no bypass
    ("/org.openoffice.Inet/Settings", "ooInetProxyType", "int", "1"),
    ("/org.openoffice.Inet/Settings", "ooInetHTTPProxyName", "string", "127.0.0.1"),
    ("/org.openoffice.Inet/Settings", "ooInetHTTPProxyPort", "int", str(DEAD_PROXY_PORT)),
    ("/org.openoffice.Inet/Settings", "ooInetHTTPSProxyName", "string", "127.0.0.1"),
    ("/org.openoffice.Inet/Settings", "ooInetHTTPSProxyPort", "int", str(DEAD_PROXY_PORT)),
    ("/org.openoffice.Inet/Settings", "ooInetFTPProxyName", "string", "127.0.0.1"),
    ("/org.openoffice.Inet/Settings", "ooInetFTPProxyPort", "int", str(DEAD_PROXY_PORT)),
    ("/org.openoffice.Inet/Settings", "ooInetNoProxy", "string", ""),
    # no update checks, no crash reporter, no recovery data: a worker is disposable
    ("/org.openoffice.Office.Jobs/Jobs/org.openoffice.Office.Jobs:Job['UpdateCheck']/Arguments",
     "AutoCheckEnabled", "boolean", "false"),
    # Excel workbooks: recalculate every formula on load (0 = always; LibreOffice's default, 1, keeps
    # Excel's cached results), so the ODS holds the values LibreOffice computes and the fidelity
    # check can compare them with the values Excel stored.
    ("/org.openoffice.Office.Calc/Formula/Load", "OOXMLRecalcMode", "int", "0"),
    # Writer: comments not shown in views (a PDF render needs a view; see _SafeDesktop)
    ("/org.openoffice.Office.Writer/Content/Display", "Note", "boolean", "false"),
    ("/org.openoffice.Office.Recovery/RecoveryInfo", "Enabled", "boolean", "false"),
    ("/org.openoffice.Office.Recovery/AutoSave", "Enabled", "boolean", "false"),
    ("/org.openoffice.Office.Common/Misc", "UseLocking", "boolean", "false"),
]


def prepare_profile(profile: Path) -> None:
    """Create a LibreOffice user profile with umstieg's security settings, if not there yet."""
    user = profile / "user"
    user.mkdir(parents=True, exist_ok=True)
    xcu = user / "registrymodifications.xcu"
    if not xcu.exists():
        items = "\n".join(_item(*s) for s in PROFILE_SETTINGS)
        xcu.write_text(_REGISTRY.format(items=items), encoding="utf-8")
        return
    # A profile kept from an earlier version (UMSTIEG_RUNTIME_DIR): set the values that differ
    # (an older umstieg wrote Writer's link mode as 2, which means "always update"), add the
    # settings it lacks.
    original = text = xcu.read_text(encoding="utf-8", errors="replace")
    missing = []
    for path, name, type_, value in PROFILE_SETTINGS:
        pattern = re.compile(rf'(<item oor:path="{re.escape(path)}"><prop oor:name="{re.escape(name)}"'
                             rf'[^>]*>)\s*(?:<value>[^<]*</value>|<value/>)')
        if pattern.search(text):
            replacement = f"<value>{value}</value>"
            # (a function, not a template: the value may hold backslashes that re would read as escapes;
            # sub() calls it before the loop moves on)
            text = pattern.sub(lambda m: m.group(1) + replacement, text)  # noqa: B023
        else:
            missing.append((path, name, type_, value))
    if missing and "</oor:items>" in text:
        items = "\n".join(_item(*s) for s in missing)
        text = text.replace("</oor:items>", items + "\n</oor:items>", 1)
    if text != original:
        xcu.write_text(text, encoding="utf-8")


def worker_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for LibreOffice: proxies dead, no bypass, no desktop integration."""
    env = dict(os.environ if base is None else base)
    dead = f"http://127.0.0.1:{DEAD_PROXY_PORT}"
    for name in ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy"):
        env[name] = env[name.upper()] = dead
    env["no_proxy"] = env["NO_PROXY"] = ""
    env["SAL_USE_VCLPLUGIN"] = "svp"          # headless rendering, no X display needed
    env.pop("DISPLAY", None)
    return env


_WRITER = "com.sun.star.text.TextDocument"
# Set while the current thread renders a PDF: Writer needs a layout, hence a view, to print.
_RENDERING = threading.local()
# The load options of the current thread's conversion, and the import filter its load used.
_LOAD = threading.local()


class LoadRefused(RuntimeError):
    """LibreOffice could not load the document; the message is a plain sentence."""


def plain_load_error(exc: BaseException) -> str:
    """One plain sentence for a LibreOffice load failure, without C++ source paths or file URLs."""
    name = type(exc).__name__
    text = str(getattr(exc, "Message", "") or exc)
    text = re.sub(r"\s*at \S+\.(?:cxx|hxx|cpp|c):\d+", "", text)          # "at ./sfx2/source/....cxx:1812"
    text = re.sub(r"<?file://\S+>?", "the file", text)
    text = re.sub(r"\b(?:SfxBaseModel|SfxObjectShell)::\w+\s*", "", text).strip(" :\"")
    if "IOException" in name or "IOException" in text:
        why = "the file's content could not be read (LibreOffice reported an input/output error)"
    elif "IllegalArgument" in name or "IllegalArgument" in text or "type detection failed" in text:
        why = "LibreOffice recognises no format it reads in it"
    elif "WrongFormat" in name or "WrongFormat" in text:
        why = "it is not in the format LibreOffice was told to read"
    else:
        why = text.splitlines()[-1][:200] if text else "LibreOffice refused it"
    return why


def _harden_converter() -> None:
    """Make unoserver's converter load every document without a view, macros or link updates."""
    import uno  # noqa: F401  (installs the import hook for com.sun.star)
    from com.sun.star.beans import PropertyValue  # type: ignore[import-not-found]
    from unoserver import converter

    class _SafeDesktop:
        """Wraps the UNO desktop so that every load is safe, and viewless where possible."""

        def __init__(self, desktop, service_manager, context, filters, types):
            self._desktop, self._sm, self._ctx, self._filters, self._types = (
                desktop, service_manager, context, filters, types)

        def loadComponentFromURL(self, url, frame, flags, props):  # noqa: N802 (UNO's name)
            options = getattr(_LOAD, "options", {})
            extra = [("Hidden", True), ("MacroExecutionMode", _NEVER_EXECUTE), ("UpdateDocMode", _NO_UPDATE)]
            if options.get("RepairPackage") == "true":
                extra.append(("RepairPackage", True))
            names = {p.Name for p in props}
            props = tuple(props) + tuple(PropertyValue(Name=n, Value=v) for n, v in extra if n not in names)
            if "FilterName" not in names:
                props += self._detect(url, props, refuse_plain_text=options.get("RefusePlainText") == "true")
            _LOAD.filter = next((p.Value for p in props if p.Name == "FilterName"), None)
            service = self._document_service(props)
            try:
                if service is None:
                    document = self._desktop.loadComponentFromURL(url, frame, flags, props)
                    if document is None:
                        raise LoadRefused("LibreOffice loaded nothing")
                    return document
                # Load into a bare document model, with no frame and no view: with LibreOffice 7.4, a
                # view's asynchronous set-up (comment windows in Writer) crashes soffice when the
                # document is loaded from another thread, as unoserver does; ODF export needs no view.
                document = self._sm.createInstanceWithContext(service, self._ctx)
                try:
                    document.load(props + (PropertyValue(Name="URL", Value=url),))
                except Exception:
                    document.dispose()          # a failed load must not leave a model in memory
                    raise
            except LoadRefused:
                raise
            except Exception as exc:
                if "DisposedException" in type(exc).__name__:
                    raise                       # LibreOffice is gone: the pool must see a dead worker
                raise LoadRefused(plain_load_error(exc)) from None
            if service == _WRITER and getattr(_RENDERING, "pdf", False):
                return self._with_view(document)
            return document

        def _with_view(self, document):
            """A hidden view on a Writer model, which PDF export needs (it prints from a layout).

            The view is attached only after the comments are removed from the model: a view's
            comment windows need UI files that LibreOffice's -nogui packages do not ship, and
            building one aborts soffice (comments are not printed anyway). Comments anchored to a
            text range can survive this removal: the visual fidelity check therefore also renders
            copies without comments.
            """
            fields = document.getTextFields().createEnumeration()
            comments = []
            while fields.hasMoreElements():
                field = fields.nextElement()
                if field.supportsService("com.sun.star.text.textfield.Annotation"):
                    comments.append(field)
            for field in comments:
                field.dispose()
            viewed = self._desktop.loadComponentFromURL("private:object", "_blank", 0, (
                PropertyValue(Name="Model", Value=document), PropertyValue(Name="Hidden", Value=True)))
            return viewed or document

        def _detect(self, url, props, refuse_plain_text):
            """The FilterName LibreOffice's own type detection picks (deep detection, by content)."""
            descriptor = tuple(p for p in props if p.Name in ("RepairPackage",)) + (
                PropertyValue(Name="URL", Value=url),)
            try:
                type_name, detected = self._types.queryTypeByDescriptor(descriptor, True)
            except Exception as exc:
                raise LoadRefused(plain_load_error(exc)) from None
            found = {p.Name: p.Value for p in detected}.get("FilterName")
            if not found and type_name:
                found = {p.Name: p.Value for p in self._types.getByName(type_name)}.get("PreferredFilter")
            if not found:
                raise LoadRefused("LibreOffice recognises no format it reads in it")
            if refuse_plain_text and found in _PLAIN_TEXT:
                raise LoadRefused("LibreOffice recognises no format in it: it could only show the file's raw "
                                  "bytes as plain text")
            return (PropertyValue(Name="FilterName", Value=found),)

        def _document_service(self, props):
            name = next((p.Value for p in props if p.Name == "FilterName"), None)
            if not name or not self._filters.hasByName(name):
                return None
            info = {p.Name: p.Value for p in self._filters.getByName(name)}
            return info.get("DocumentService") or None

        def __getattr__(self, name):
            return getattr(self._desktop, name)

    base = converter.UnoConverter

    class HardenedConverter(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.desktop = _SafeDesktop(self.desktop, self.service, self.context, self.filter_service,
                                        self.type_service)

        def convert(self, inpath=None, indata=None, outpath=None, convert_to=None, filtername=None,
                    filter_options=(), *args, **kwargs):
            _RENDERING.pdf = bool(filtername) and filtername.endswith("_pdf_Export")
            options = [o for o in (filter_options or []) if not o.startswith(LOAD_OPTION)]
            _LOAD.options = dict(o[len(LOAD_OPTION):].partition("=")[::2] for o in (filter_options or [])
                                 if o.startswith(LOAD_OPTION))
            _LOAD.filter = None
            try:
                result = super().convert(inpath, indata, outpath, convert_to, filtername, options, *args, **kwargs)
                if outpath:
                    report = {"filter": _LOAD.filter, "repair": _LOAD.options.get("RepairPackage") == "true"}
                    Path(str(outpath) + LOAD_REPORT).write_text(json.dumps(report), encoding="utf-8")
                return result
            finally:
                _RENDERING.pdf = False
                _LOAD.options, _LOAD.filter = {}, None

    converter.UnoConverter = HardenedConverter


def _watch(lo: subprocess.Popen, parent: int | None) -> None:
    """Exit as soon as LibreOffice dies or the pool that started this worker (if any) is gone."""
    while True:
        if lo.poll() is not None:
            log.warning("LibreOffice exited with %s; worker exits", lo.returncode)
            break
        if parent is not None and os.getppid() != parent:
            log.warning("pool process %s is gone; worker exits", parent)
            break
        time.sleep(0.2)
    _kill_group_and_exit(3)


def _kill_group_and_exit(code: int) -> None:
    try:
        os.killpg(os.getpgid(0), signal.SIGKILL)   # LibreOffice (oosplash, soffice.bin) and us
    finally:
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m converters.soffice_server")
    parser.add_argument("--port", type=int, required=True, help="XML-RPC port (unoserver's API)")
    parser.add_argument("--uno-port", type=int, required=True, help="LibreOffice's UNO socket port")
    parser.add_argument("--profile", type=Path, required=True, help="LibreOffice user profile directory")
    parser.add_argument("--soffice", default="soffice")
    parser.add_argument("--interface", default="127.0.0.1",
                        help="address the XML-RPC server listens on (0.0.0.0 for a remote worker)")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="exit when this process (the pool) is gone; left out for a standalone worker")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="worker %(process)d: %(message)s")
    logging.getLogger("unoserver").setLevel(logging.WARNING)

    _harden_converter()
    import xmlrpc.server
    from unoserver.server import UnoServer

    # one log line per XML-RPC request is noise in the worker log
    # (setattr, not an assignment: type checkers refuse assigning to a method)
    setattr(xmlrpc.server.SimpleXMLRPCRequestHandler, "log_request", lambda self, *a, **k: None)  # noqa: B010

    prepare_profile(args.profile)
    server = UnoServer(interface=args.interface, port=str(args.port), uno_interface="127.0.0.1",
                       uno_port=str(args.uno_port), user_installation=args.profile.as_uri())
    cmd = [args.soffice, "--headless", "--invisible", "--nocrashreport", "--nodefault", "--nologo",
           "--nofirststartwizard", "--norestore", "--nolockcheck",
           f"-env:UserInstallation={args.profile.as_uri()}",
           f"--accept=socket,host=127.0.0.1,port={args.uno_port},tcpNoDelay=1;urp;StarOffice.ComponentContext"]
    server.libreoffice_process = subprocess.Popen(cmd, env=worker_environment(),
                                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def stop(signum, frame):
        _kill_group_and_exit(0)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    threading.Thread(target=_watch, args=(server.libreoffice_process, args.parent_pid),
                     daemon=True, name="watch").start()
    server.serve()          # returns only if LibreOffice never answered
    _kill_group_and_exit(2)
    return 2


if __name__ == "__main__":
    sys.exit(main())
