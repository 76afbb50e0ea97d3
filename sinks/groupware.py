"""Calendars and address books as targets, over CalDAV (RFC 4791) and CardDAV (RFC 6352).

Each source calendar (an event item's `location`: the calendar's name, not the file it was
exported in) becomes one calendar collection in the user's calendar home, made with MKCALENDAR and
accepting events, tasks and journals; each source address book one address book, made with an
extended MKCOL (RFC 5689). Collection names are made URL-safe; the name people see is set as
DAV:displayname. Where calendars and address books may share one home (`generic`: Radicale), an
address book's name carries `.contacts`, which no calendar name can, so that the calendar and the
address book of one source folder stay two collections. Homes:

- Nextcloud: `<url>/remote.php/dav/calendars/<user>/`, `<url>/remote.php/dav/addressbooks/users/<user>/`;
- Open-Xchange: `<url>/servlet/dav/caldav/`, `<url>/servlet/dav/carddav/` (the logged-in user's folders);
- any other server: `<url>/<folder>/` with `{user}` in `folder` replaced, by default `<url>/<user>/`
  (Radicale, Baïkal's `dav.php/calendars/{user}`, …).

An event or a card is PUT as `<collection>/<name>.ics|.vcf` with `If-None-Match: *`: create only,
never overwrite. The name comes from the UID (kept as it is when it is URL-safe, else hashed), so
a rerun addresses the same resource. A 412 answer means something is there already: the load step
then verifies what. A 409 `no-uid-conflict` means the UID lives under another name in the same
collection: that resource is the reference.

Servers rewrite what they store, so `digest` is not a hash of the bytes but a fingerprint of the
fields a server must keep (clients.pim); `find` and `verify` read the object back and compare the
fingerprint field by field, naming what differs.

vCard 2.1 cards (Outlook's export) are sent as vCard 3.0 (clients.pim.vcard_30): CardDAV servers
must refuse 2.1 (Nextcloud: 415), and Radicale, which takes them, loses their types and cuts their
notes at the first comma.

Refusals are typed: an object over the server's size limit (413, 403 `max-resource-size`, or —
Radicale — 412 for an object that does not exist) fails as `too_large`; a series with more
occurrences than the server allows (403 `max-instances`, or over `max_instances` before sending)
as `too_many_instances`; data the server cannot read as `rejected` (Nextcloud answers 500 for
iCalendar its parser, sabre/vobject, refuses, naming the parser's exception: that is the object,
not the server, and no retry helps); a kind of component the calendar does not take as
`unsupported_item`. A calendar the server will not make because the account made too many lately
(Nextcloud: 10 an hour, 429 without Retry-After) or has too many (30, 403) fails its items as
`calendar_limit`, saying when a rerun will succeed; `check_calendars` tells before a run. 423,
other 429s, 5xx and time-outs are `TransientError` (with Retry-After); 401 is `FatalError`; 507
is `QuotaExceeded`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections import OrderedDict
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit
from xml.sax.saxutils import escape

import httpx
import icalendar

from core.plugins import Account, PerProcess
from sinks.groupware_config import CalDavTarget, CardDavTarget
from core.errors import ConfigError, FatalError, ItemError, TransientError
from clients.http import retry_after
from core.retry import governed
from core.messages import clip
from clients.pim import PimError, components, differences, event_uid, fingerprint, instance_count, vcard_30, \
    with_contact_uid
from sinks.http import TRANSIENT_STATUS as _TRANSIENT_STATUS, HttpTarget, Unreachable as _Unreachable
from sinks.webdav import MAX_RETRY_AFTER, QuotaExceeded

__all__ = ["CalDav", "CardDav", "Refused", "sink_for"]

log = logging.getLogger("umstieg.sinks.groupware")

_DAV, _CAL, _CARD = "{DAV:}", "{urn:ietf:params:xml:ns:caldav}", "{urn:ietf:params:xml:ns:carddav}"
#: Nextcloud's documented defaults when a collection does not announce its own limits.
_NEXTCLOUD_LIMITS = {"calendar": (10 * 1024 * 1024, 3500), "addressbook": (5 * 1024 * 1024, None)}
#: Nextcloud 27's defaults for calendars per account (app config dav/maximumCalendarsSubscriptions,
#: calendars and subscriptions together) and new calendars per period (dav/rateLimitCalendarCreation
#: per dav/rateLimitPeriodCalendarCreation seconds): apps/dav/lib/CalDAV/Security/RateLimitingPlugin.php.
_NEXTCLOUD_CALENDARS, _NEXTCLOUD_NEW_CALENDARS = 30, 10
#: What a calendar made here accepts: a source calendar may hold tasks and journals beside events
#: (Nextcloud's MKCALENDAR default is VEVENT and VTODO: a VJOURNAL is then refused with 403).
_COMPONENTS = ("VEVENT", "VTODO", "VJOURNAL")
#: a PROPFIND body asking for `props` (prefixes: d DAV:, c CalDAV, s Sabre)
_PROPFIND = ('<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" '
             'xmlns:c="urn:ietf:params:xml:ns:caldav" xmlns:s="http://sabredav.org/ns"><d:prop>{props}</d:prop>'
             '</d:propfind>')
#: The longest Retry-After one MKCALENDAR waits for, and how often, before its items fail.
_MKCALENDAR_WAIT, _MKCALENDAR_TRIES = 60.0, 3
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,119}$")


class Refused(ItemError):
    """The server will not store this object; `reason` says why (`too_large`, `too_many_instances`,
    `rejected`, `invalid_data`, `precondition_failed`, `unsupported_item`, `calendar_limit`)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _unscheduled(data: bytes) -> bytes:
    """The calendar object with every ORGANIZER and ATTENDEE marked SCHEDULE-AGENT=CLIENT.

    A CalDAV server with scheduling (Nextcloud's Sabre, OX) treats a meeting PUT into its
    organizer's calendar as a meeting just made, and invites every attendee: by mail, and into
    the calendars of those on the same server. A migration would send thousands of invitations
    to meetings long past. RFC 6638 lets the client say it does the scheduling itself."""
    if b"ATTENDEE" not in data and b"ORGANIZER" not in data:
        return data
    try:
        cal = icalendar.Calendar.from_ical(data)
    except ValueError as exc:
        raise PimError(f"not an iCalendar object ({exc})") from None
    for component in cal.walk():
        for name in ("ORGANIZER", "ATTENDEE"):
            values = component.get(name)
            for value in values if isinstance(values, list) else [values] if values is not None else []:
                value.params["SCHEDULE-AGENT"] = "CLIENT"
    return cal.to_ical()


def _sabre_error(resp: httpx.Response) -> tuple[str, str]:
    """(exception class, message) a SabreDAV server (Nextcloud) names in its error body, or ('', '')."""
    if "xml" not in resp.headers.get("Content-Type", ""):
        return "", ""
    try:
        tree = ET.fromstring(resp.content)
    except ET.ParseError:
        return "", ""
    return ((tree.findtext("{http://sabredav.org/ns}exception") or "").strip(),
            clip(tree.findtext("{http://sabredav.org/ns}message"), 500))


def collection_name(display: str) -> str:
    """A URL-safe collection name for a calendar or address book called `display`.

    Lower-case letters, digits, `-` and `_`; when that loses anything, a short hash of the
    display name follows, so that "Team/Plan" and "Team Plan" stay two collections.
    """
    umlauts: dict[str, str | int | None] = {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "ae", "Ö": "oe", "Ü": "ue"}
    translit = display.translate(str.maketrans(umlauts))
    slug = re.sub(r"[^a-z0-9_]+", "-", translit.lower()).strip("-_")[:60] or "calendar"
    if slug != display:
        slug += "-" + hashlib.sha256(display.encode("utf-8")).hexdigest()[:8]
    return slug


def resource_name(uid: str, suffix: str) -> str:
    """The resource name of the object with this UID: the UID itself when it is URL-safe."""
    if _SAFE_NAME.match(uid) and not uid.endswith(suffix):
        return uid + suffix
    return "uid-" + hashlib.sha256(uid.encode("utf-8")).hexdigest()[:40] + suffix


class _Dav(HttpTarget):
    """What CalDAV and CardDAV share: addressing, requests, collections, create-only PUTs."""

    kind = "calendar"                  # or "addressbook"
    #: added to collection names where calendars and address books may share a home (see module doc)
    marker = ""
    suffix = ".ics"
    content_type = "text/calendar; charset=utf-8"
    product = "the CalDAV server"

    def __init__(self, config: CalDavTarget | CardDavTarget, *, transport: httpx.BaseTransport | None = None,
                 sleep=time.sleep) -> None:
        super().__init__(config, transport=transport, sleep=sleep)
        self._make_lock = threading.Lock()
        self._collections: dict[tuple[str, str], dict] = {}      # (account, path) -> its limits
        self._uids: OrderedDict[str, str] = OrderedDict()         # digest -> uid, see digest()
        self._refusals: dict[str, tuple[float, Refused]] = {}    # account -> (until, why), see CalDav

    # ----------------------------------------------------------------------- addressing
    def home(self, owner: str) -> str:
        """The unencoded server path of `owner`'s calendar / address book home, ending in '/'."""
        flavour = self.config.flavour
        if flavour == "nextcloud":
            middle = f"calendars/{owner}" if self.kind == "calendar" else f"addressbooks/users/{owner}"
            return f"{self._prefix}/remote.php/dav/{middle}/"
        if flavour == "ox":
            return f"{self._prefix}/servlet/dav/{'caldav' if self.kind == 'calendar' else 'carddav'}/"
        folder = (self.config.folder or "{user}").replace("{user}", owner).strip("/")
        return f"{self._prefix}/{folder}/" if folder else f"{self._prefix}/"

    def collection_path(self, owner: str, display: str) -> str:
        """The unencoded server path of `owner`'s collection called `display`, ending in '/'."""
        marker = self.marker if self.config.flavour == "generic" else ""
        return self.home(owner) + collection_name(display) + marker + "/"

    def _url(self, path: str) -> str:
        return self._origin + quote(path, safe="/@+")

    def _ref(self, user: str, path: str) -> str:
        scheme, _, netloc = self._origin.partition("://")
        return f"{scheme}://{quote(user, safe='')}@{netloc}{path}"

    def _parse_ref(self, ref: str) -> tuple[str, str]:
        user, path = self._split_ref(ref)
        return unquote(user), path

    # ----------------------------------------------------------------------- requests
    def _request(self, method: str, user: str, path: str, *, ok: tuple[int, ...] = (200, 201, 204, 207),
                 headers: dict | None = None, content: bytes | None = None) -> httpx.Response:
        what = f"{method} {path}"
        with self._transient(what):
            resp = self._client.request(method, self._url(path), headers=headers, content=content,
                                        auth=self._auth(user))
        if resp.status_code not in ok:
            self._fail(resp, what, user)
        return resp

    def _fail(self, resp: httpx.Response, what: str, user: str) -> None:
        status = resp.status_code
        detail = f"HTTP {status} {resp.reason_phrase}"
        exception, message = _sabre_error(resp)
        if status == 500 and exception.startswith("Sabre\\VObject\\"):
            # Nextcloud's parser refused the data (RSCALE, an unknown FREQ, …): the same object
            # gets the same answer however often it is sent
            raise Refused(f"{what}: the server cannot read it ({detail}: {message or exception})", "rejected")
        if status == 507:
            raise QuotaExceeded(f"{self.product} has no room left for account {user!r} ({detail})",
                                owner=user, account=user)
        if status in _TRANSIENT_STATUS:
            raise governed(TransientError(f"{what}: {detail}", retry_after=retry_after(resp, MAX_RETRY_AFTER)),
                           self.retry)
        if status == 401:
            raise FatalError(f"{self.product} refused the credentials of account {user!r} ({detail}): "
                             "check its (app) password")
        raise ItemError(f"{what}: {detail}")

    def _propfind(self, user: str, path: str, props: str, depth: str = "0") -> dict[str, ET.Element] | None:
        """path -> <prop> of every resource in the answer, or None when `path` does not exist."""
        body = ('<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" '
                'xmlns:c="urn:ietf:params:xml:ns:caldav" xmlns:cr="urn:ietf:params:xml:ns:carddav">'
                f"<d:prop>{props}</d:prop></d:propfind>")
        resp = self._request("PROPFIND", user, path, ok=(207, 404),
                             headers={"Depth": depth, "Content-Type": "application/xml; charset=utf-8"},
                             content=body.encode())
        if resp.status_code == 404:
            return None
        return self._multistatus(resp, f"PROPFIND {path}")

    @staticmethod
    def _multistatus(resp: httpx.Response, what: str) -> dict[str, ET.Element]:
        try:
            tree = ET.fromstring(resp.content)
        except ET.ParseError as exc:
            raise TransientError(f"{what}: unreadable answer ({exc})") from None
        found = {}
        for response in tree.iter(f"{_DAV}response"):
            href = unquote(urlsplit(response.findtext(f"{_DAV}href") or "").path)
            prop = ET.Element("prop")
            for propstat in response.iter(f"{_DAV}propstat"):
                status = propstat.findtext(f"{_DAV}status") or ""
                p = propstat.find(f"{_DAV}prop")
                if " 200 " in f"{status} " and p is not None:
                    prop.extend(list(p))
            found[href] = prop
        return found

    # ----------------------------------------------------------------------- collections
    def _collection(self, user: str, owner: str, display: str) -> tuple[str, dict]:
        """The path of the collection for `display` (made if missing) and its announced limits."""
        path = self.collection_path(owner, display)
        with self._lock:
            known = self._collections.get((user, path))
        if known is not None:
            return path, known
        props = ("<d:resourcetype/><c:max-resource-size/><c:max-instances/><cr:max-resource-size/>"
                 "<c:supported-calendar-component-set/>")
        with self._make_lock:            # two threads making one calendar at once: the second gets 409
            with self._lock:
                known = self._collections.get((user, path))
            if known is not None:
                return path, known
            found = self._propfind(user, path, props)
            if found is None:
                self._make_collection(user, path, display)
                found = self._propfind(user, path, props)
                if found is None:
                    raise ItemError(f"{self.kind} {display!r} of {owner} could not be made at {path}")
            prop = next(iter(found.values()), ET.Element("prop"))
            limits = self._limits(prop)
            with self._lock:
                self._collections[(user, path)] = limits
        return path, limits

    def _limits(self, prop: ET.Element) -> dict:
        def number(tag: str) -> int | None:
            text = prop.findtext(tag)
            return int(text) if text and text.strip().isdigit() else None
        size = number(f"{_CAL}max-resource-size") or number(f"{_CARD}max-resource-size")
        instances = number(f"{_CAL}max-instances")
        if self.config.flavour == "nextcloud":
            default_size, default_instances = _NEXTCLOUD_LIMITS[self.kind]
            size, instances = size or default_size, instances or default_instances
        comps = prop.find(f"{_CAL}supported-calendar-component-set")
        accepted = {c.get("name", "").upper() for c in comps.iter(f"{_CAL}comp")} if comps is not None else None
        return {"size": size, "instances": getattr(self.config, "max_instances", None) or instances,
                "components": accepted or None}

    def _make_collection(self, user: str, path: str, display: str) -> None:
        raise NotImplementedError

    def _mkcol(self, user: str, path: str, method: str, body: str) -> None:
        resp = self._request(method, user, path, ok=(200, 201, 207, 405, 409),
                             headers={"Content-Type": "application/xml; charset=utf-8"},
                             content=body.encode("utf-8"))
        if resp.status_code in (405, 409):          # made meanwhile by another process (or a parent is missing:
            log.debug("%s %s: HTTP %s", method, path, resp.status_code)   # the PROPFIND after it tells)

    # ----------------------------------------------------------------------- the sink
    def _object(self, src: Path) -> tuple[str, bytes]:
        """(uid, bytes to send) of the local file `src`."""
        raise NotImplementedError

    def _read(self, src: Path) -> bytes:
        try:
            return src.read_bytes()
        except OSError as exc:
            raise ItemError(f"cannot read {src}: {exc.strerror or exc}") from exc

    def digest(self, src: Path) -> str:
        """The fingerprint of the fields a server must keep (clients.pim), not a hash of the bytes."""
        uid, data = self._object(src)
        try:
            digest = fingerprint(data)
        except PimError as exc:
            raise Refused(f"{src.name}: {exc}", "invalid_data") from None
        with self._lock:                           # find() is asked next with this digest
            self._uids[digest] = uid
            while len(self._uids) > 4096:
                self._uids.popitem(last=False)
        return digest

    def check(self, owners: list[str]) -> list[str]:
        """Server reachable, credentials accepted, every user's home there: every problem at once."""
        problems = []
        for owner in owners:
            try:
                user = self._login(owner)
                problems += [f"{self.kind} target {self.config.root}: {p}" for p in self._check_home(user, owner)]
            except _Unreachable as exc:
                return problems + [f"{self.kind} target {self.config.root}: {exc}"]
            except (ConfigError, TransientError, FatalError, ItemError) as exc:
                problems.append(f"{self.kind} target {self.config.root}: {exc}")
        return problems

    def user_problems(self, owners: list[str]) -> dict[str, str]:
        """Target users whose home cannot take objects now, with why (never a secret): a login the
        server refuses, a home that does not exist (the user is not provisioned), no credentials
        configured. Those users wait; the others go on. A server out of reach and a service
        account that cannot log in (or whose secret cannot be read) concern every user: `check`
        reports them, and nothing is named here."""
        problems: dict[str, str] = {}
        service_works: bool | None = None
        for owner in owners:
            try:
                user = self._login(owner)
            except ConfigError as exc:                 # no credentials for this user at all
                problems[owner] = str(exc)
                continue
            try:
                found = self._check_home(user, owner)
                if found and user != owner:
                    if service_works is None:         # the service account itself, once
                        service_works = self._probe("PROPFIND", user, self._url(self.home(user)),
                                                    headers={"Depth": "0"}).status_code != 401
                    if not service_works:
                        return {}
            except _Unreachable:
                return {}
            except ConfigError as exc:
                if user != owner:
                    return {}
                found = [str(exc)]
            except (TransientError, FatalError, ItemError) as exc:
                found = [str(exc)]
            if found:
                problems[owner] = "; ".join(found)
        return problems

    def accounts(self, names: list[str]) -> dict[str, Account]:
        """The identity check (core.plugins.ChecksUsers): the user's home is there, and who the
        server says its owner is: the principal's display name and e-mail address (Sabre's
        `email-address`, else the `mailto:` of RFC 6638's calendar-user-address-set), where it
        reports them. The principal is the login's own (current-user-principal) or, for a service
        account, the home's DAV:owner. A server out of reach or a service account refused
        concerns everyone: nobody is blamed (`check` says so)."""
        found: dict[str, Account] = {}
        for owner in names:
            try:
                user = self._login(owner)
            except ConfigError as exc:                  # no credentials for this user at all
                found[owner] = Account(False, why=str(exc))
                continue
            home = self.home(owner)
            try:
                resp = self._probe_home(user, owner)
                if resp.status_code == 401:
                    found[owner] = (Account(False, why=f"{self.product} refused the login of {owner!r} (HTTP 401): "
                                                       "no such account, or a wrong (app) password")
                                    if user == owner else Account(None))
                    continue
                if resp.status_code == 404:
                    found[owner] = Account(False, why=f"the {self.kind} home of {owner!r} ({home}) does not exist "
                                                      "at the target")
                    continue
                if resp.status_code != 207:
                    found[owner] = Account(None)
                    continue
                prop = next(iter(self._multistatus(resp, f"PROPFIND {home}").values()), ET.Element("prop"))
                whose = prop.find(f"{_DAV}current-user-principal" if user == owner else f"{_DAV}owner")
                principal = whose.findtext(f"{_DAV}href") if whose is not None else None
                email, name = self._principal(user, principal) if principal else (None, None)
            except _Unreachable:
                return {name: Account(None) for name in names}
            except (TransientError, ItemError, FatalError):
                found[owner] = Account(None)
                continue
            found[owner] = Account(True, email=email, display_name=name)
        return found

    def _principal(self, user: str, href: str) -> tuple[str | None, str | None]:
        """(e-mail address, display name) of the principal at `href`, each None where not reported."""
        path = unquote(urlsplit(href).path)
        resp = self._probe("PROPFIND", user, self._url(path), headers={
            "Depth": "0", "Content-Type": "application/xml; charset=utf-8"},
            content=_PROPFIND.format(props="<d:displayname/><s:email-address/><c:calendar-user-address-set/>").encode())
        if resp.status_code != 207:
            return None, None
        prop = next(iter(self._multistatus(resp, f"PROPFIND {path}").values()), ET.Element("prop"))
        email = (prop.findtext("{http://sabredav.org/ns}email-address") or "").strip() or None
        if email is None:
            addresses = [h.text.strip() for h in prop.iter(f"{_DAV}href") if h.text]
            email = next((a[7:] for a in addresses if a.lower().startswith("mailto:")), None)
        return email, (prop.findtext(f"{_DAV}displayname") or "").strip() or None

    def _probe_home(self, user: str, owner: str) -> httpx.Response:
        """The check's PROPFIND (Depth 0) on `owner`'s home as `user`, asking who owns it: one
        request answers `check`, `user_problems` and `accounts` (sent once while `probing()`)."""
        return self._probe("PROPFIND", user, self._url(self.home(owner)), headers={
            "Depth": "0", "Content-Type": "application/xml; charset=utf-8"},
            content=_PROPFIND.format(props="<d:current-user-principal/><d:owner/>").encode())

    def _check_home(self, user: str, owner: str) -> list[str]:
        home = self.home(owner)
        resp = self._probe_home(user, owner)
        if resp.status_code == 401:
            return [f"account {user!r} was refused (HTTP 401): check its (app) password"]
        if resp.status_code == 404:
            return [f"the {self.kind} home of {owner!r} ({home}) does not exist: the user must exist at the "
                    "target (log in once, or be provisioned) before anything moves"]
        if 300 <= resp.status_code < 400:
            return [f"the server redirects to {resp.headers.get('Location')}: set url to the real address"]
        if resp.status_code != 207:
            return [f"account {user!r} cannot read {home} (HTTP {resp.status_code} {resp.reason_phrase})"]
        return []

    def find(self, owner: str, rel: str, digest: str, meta: dict | None = None) -> str | None:
        """The reference of the object if the collection `rel` already holds it with this fingerprint."""
        uid = (meta or {}).get("uid")
        if uid is None:
            with self._lock:
                uid = self._uids.get(digest)
        if uid is None:
            return None                            # put finds out (412 / 409) and says where it is
        user = self._login(owner)
        path, _ = self._collection(user, owner, rel)
        path += resource_name(uid, self.suffix)
        data = self._get(user, path)
        if data is None:
            return None
        try:
            same = fingerprint(data) == digest
        except PimError:
            same = False
        return self._ref(user, path) if same else None

    def _get(self, user: str, path: str) -> bytes | None:
        resp = self._request("GET", user, path, ok=(200, 404))
        return None if resp.status_code == 404 else resp.content

    def put(self, owner: str, rel: str, src: Path, mtime: float | None = None, meta: dict | None = None,
            digest: str | None = None) -> str:
        """Create the object of `src` in the collection `rel` of `owner`; returns its reference.

        (`digest` is not needed: the server keeps no checksum; `find` and `verify` compare fields.)"""
        uid, data = self._object(src)
        user = self._login(owner)
        collection, limits = self._collection(user, owner, rel)
        path = collection + resource_name(uid, self.suffix)
        self._precheck(data, limits, src)
        headers = {"If-None-Match": "*", "Content-Type": self.content_type}
        refusals = (200, 201, 204, 400, 403, 404, 409, 412, 413, 415)
        resp = self._request("PUT", user, path, ok=refusals, headers=headers, content=data)
        if resp.status_code == 404:                # the collection was deleted meanwhile: make it again, once
            with self._lock:
                self._collections.pop((user, collection), None)
            self._collection(user, owner, rel)
            resp = self._request("PUT", user, path, ok=refusals, headers=headers, content=data)
        status = resp.status_code
        if status in (200, 201, 204):
            return self._ref(user, path)
        body = resp.text[:4000] if "xml" in resp.headers.get("Content-Type", "") or status != 412 else ""
        what = f"{self.kind} object {uid!r} ({src.name}, {len(data)} bytes)"
        if status == 412:
            if self._get(user, path) is not None:
                return self._ref(user, path)       # there already: verify says whether it is the same
            if limits["size"] is not None and len(data) > limits["size"]:
                raise Refused(f"{what} is larger than the server's limit of {limits['size']} bytes", "too_large")
            raise Refused(f"{what}: the server refused it (HTTP 412 Precondition Failed)", "precondition_failed")
        if status == 409:
            if "no-uid-conflict" in body:
                href = self._conflict_href(body) or self._by_uid(user, collection, uid)
                if href:
                    return self._ref(user, href)
            raise Refused(f"{what}: conflict (HTTP 409): {self._condition(body) or 'the collection refused it'}",
                          "rejected")
        if status == 413 or "max-resource-size" in body:
            limit = f" of {limits['size']} bytes" if limits["size"] else ""
            raise Refused(f"{what} is larger than the server's limit{limit} (HTTP {status})", "too_large")
        if "max-instances" in body or "max-attendees" in body:
            raise Refused(f"{what} has more occurrences than the server allows (HTTP {status})",
                          "too_many_instances")
        condition = self._condition(body)
        if "supported-calendar-component" in condition:
            raise Refused(f"{what}: the calendar does not take this kind of entry (HTTP {status}: "
                          f"{_sabre_error(resp)[1] or condition})", "unsupported_item")
        said = ": ".join(x for x in (condition, _sabre_error(resp)[1]) if x)
        raise Refused(f"{what}: the server refused it (HTTP {status} {resp.reason_phrase}"
                      f"{': ' + said if said else ''})", "rejected")

    def _precheck(self, data: bytes, limits: dict, src: Path) -> None:
        """Refuse before sending what the server has announced it would refuse."""
        if limits["size"] is not None and len(data) > limits["size"]:
            raise Refused(f"{src.name} ({len(data)} bytes) is larger than the server's limit of "
                          f"{limits['size']} bytes per {self.kind} object", "too_large")

    @staticmethod
    def _condition(body: str) -> str:
        """The precondition element a WebDAV error body names (`valid-calendar-data`, …), or ''."""
        try:
            tree = ET.fromstring(body)
        except ET.ParseError:
            return ""
        names = [child.tag.rpartition("}")[2] for child in tree]
        return ", ".join(n for n in names if n not in ("message", "exception"))

    @staticmethod
    def _conflict_href(body: str) -> str | None:
        match = re.search(r"no-uid-conflict[^>]*>\s*<(?:\w+:)?href[^>]*>([^<]+)<", body)
        return unquote(urlsplit(match.group(1).strip()).path) if match else None

    def _by_uid(self, user: str, collection: str, uid: str) -> str | None:
        """The path of the object with this UID in `collection` (a REPORT query), or None."""
        raise NotImplementedError

    def verify(self, ref: str, digest: str) -> str | None:
        """None when the server holds the object with this fingerprint, else what differs."""
        user, path = self._parse_ref(ref)
        data = self._get(user, path)
        if data is None:
            return f"{ref} is missing at the target"
        try:
            actual = fingerprint(data)
        except PimError as exc:
            return f"{ref} cannot be read back: {exc}"
        found = differences(digest, actual)
        return f"{ref}: " + "; ".join(found) if found else None

    def remove(self, ref: str) -> None:
        """Delete an object at the target (only for delete_at_target); already gone is fine."""
        user, path = self._parse_ref(ref)
        self._request("DELETE", user, path, ok=(200, 204, 404))


class CalDav(_Dav):
    """Calendars over CalDAV: one calendar per source calendar, one resource per UID."""

    def _make_collection(self, user: str, path: str, display: str) -> None:
        """MKCALENDAR, accepting events, tasks and journals (a server that will not: its default set).

        A server that refuses to make one more calendar for this account now (429) or at all (403
        "Calendar limit reached", Nextcloud) fails the items of that calendar as `calendar_limit`,
        and every later calendar of the account without asking again until the window has passed.
        A Retry-After up to a minute is waited for (Nextcloud sends none: its window is an hour)."""
        with self._lock:
            refused = self._refusals.get(user)
        if refused is not None and refused[0] > time.time():
            raise Refused(str(refused[1]), "calendar_limit")
        comps = "".join(f'<c:comp name="{c}"/>' for c in _COMPONENTS)
        bodies = [f"<c:supported-calendar-component-set>{comps}</c:supported-calendar-component-set>", ""]
        for attempt in range(_MKCALENDAR_TRIES):
            resp = self._request("MKCALENDAR", user, path, ok=(200, 201, 207, 400, 403, 405, 409, 415, 429),
                                 headers={"Content-Type": "application/xml; charset=utf-8"},
                                 content=('<?xml version="1.0" encoding="utf-8"?><c:mkcalendar xmlns:d="DAV:" '
                                          'xmlns:c="urn:ietf:params:xml:ns:caldav"><d:set><d:prop>'
                                          f"<d:displayname>{escape(display)}</d:displayname>{bodies[0]}"
                                          "</d:prop></d:set></c:mkcalendar>").encode("utf-8"))
            status = resp.status_code
            if status in (200, 201, 207, 405, 409):  # made (or made meanwhile: the PROPFIND after it tells)
                return
            message = _sabre_error(resp)[1]
            if status == 429:
                wait = retry_after(resp)
                if wait is not None and wait <= _MKCALENDAR_WAIT and attempt + 1 < _MKCALENDAR_TRIES:
                    self._sleep(wait)
                    continue
                self._refuse(user, display, wait, message or "HTTP 429 Too Many Requests")
            # Nextcloud says it with a plain Forbidden ("Calendar limit reached"): its words are all
            # that tell this 403 from one for a home the account may not write in
            if status == 403 and "limit" in message.lower():
                self._refuse(user, display, None, message, total=True)
            if status in (400, 403, 415) and len(bodies) > 1:  # a server that will not take the set
                bodies.pop(0)
                continue
            self._fail(resp, f"MKCALENDAR {path}", user)
        self._refuse(user, display, None, "HTTP 429 Too Many Requests")

    def _refuse(self, user: str, display: str, wait: float | None, said: str, total: bool = False) -> None:
        """Fail (and remember for the account) a calendar the server will not make now."""
        if total:
            limit = self._calendar_limits()[0]
            why = (f"the server will not make calendar {display!r} for account {user!r}: it has as many "
                   f"calendars as the server allows{f' ({limit})' if limit and limit > 0 else ''} ({said}). "
                   "Raise the limit (Nextcloud: occ config:app:set dav maximumCalendarsSubscriptions "
                   "--value=N), or remove calendars there, then rerun the class calendar_limit")
            until = time.time() + 365 * 86400
        else:
            period = self.config.calendar_creation_period
            wait = wait if wait is not None else float(period)
            until = time.time() + wait
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(until))
            per = self._calendar_limits()[1]
            why = (f"the server will not make calendar {display!r} for account {user!r} now: too many "
                   f"calendars made lately ({said}; it allows {per or 'a few'} new calendars per "
                   f"{period // 60} minutes). Rerun the class calendar_limit after {when}, or raise the "
                   "limit first (Nextcloud: occ config:app:set dav rateLimitCalendarCreation --value=N)")
        refusal = Refused(why, "calendar_limit")
        with self._lock:
            self._refusals[user] = (until, refusal)
        raise refusal

    def _calendar_limits(self) -> tuple[int | None, int | None]:
        """(calendars per account, new calendars per period): configured, else Nextcloud's defaults."""
        cfg = self.config
        nextcloud = cfg.flavour == "nextcloud"
        total = cfg.max_calendars if cfg.max_calendars is not None else _NEXTCLOUD_CALENDARS if nextcloud else None
        per = cfg.new_calendars_per_period or (_NEXTCLOUD_NEW_CALENDARS if nextcloud else None)
        return (None if total == -1 else total), per

    def check_calendars(self, planned: dict[str, set[str]]) -> list[str]:
        """Problems with the calendars a run would make, before it makes any: `planned` holds per
        target login the names of the source calendars its items are in.

        The calendars an account does not have yet are counted against the server's limits (the
        department's `max_calendars` and `new_calendars_per_period`, else Nextcloud's defaults):
        more new ones than the server makes per period, or more in all than it allows, is one
        problem per account, with what to change. Servers without known limits: no problem."""
        total, per = self._calendar_limits()
        if total is None and per is None:
            return []
        problems = []
        for owner, names in sorted(planned.items()):
            if not names:
                continue
            try:
                user = self._login(owner)
                listing = self._propfind(user, self.home(owner), "<d:resourcetype/>", depth="1")
            except (ConfigError, TransientError, FatalError, ItemError) as exc:
                problems.append(f"calendar target {self.config.root}: cannot count the calendars of {owner!r}: {exc}")
                continue
            if listing is None:
                continue                                # check() says that the home is missing
            existing = {href.rstrip("/") + "/" for href, prop in listing.items()
                        if prop.find(f"{_DAV}resourcetype/{_CAL}calendar") is not None
                        or prop.find("{DAV:}resourcetype/{http://calendarserver.org/ns/}subscribed") is not None}
            new = sorted(n for n in names if self.collection_path(owner, n) not in existing)
            period = f"{self.config.calendar_creation_period // 60} minutes"
            if per is not None and len(new) > per:
                problems.append(
                    f"calendar target {self.config.root}: {owner!r} would get {len(new)} new calendars "
                    f"({', '.join(repr(n) for n in new[:5])}{', …' if len(new) > 5 else ''}); the server makes "
                    f"{per} per account in {period}, and the calendars beyond would wait for a rerun. Raise "
                    f"the limit for the migration (Nextcloud: occ config:app:set dav rateLimitCalendarCreation "
                    f"--value={len(new)}) and say so in the department (calendar_target: new_calendars_per_period)")
            if total is not None and len(existing) + len(new) > total:
                problems.append(
                    f"calendar target {self.config.root}: {owner!r} would have {len(existing) + len(new)} "
                    f"calendars ({len(existing)} there, {len(new)} new); the server allows {total} per account. "
                    f"Raise it (Nextcloud: occ config:app:set dav maximumCalendarsSubscriptions "
                    f"--value={len(existing) + len(new)}) and say so in the department (calendar_target: "
                    "max_calendars)")
        return problems

    def _object(self, src: Path) -> tuple[str, bytes]:
        data = self._read(src)
        try:
            uid = event_uid(data)
            if self.config.invitations == "suppress":
                data = _unscheduled(data)
            return uid, data
        except PimError as exc:
            raise Refused(f"{src.name}: {exc}", "invalid_data") from None

    def _precheck(self, data: bytes, limits: dict, src: Path) -> None:
        super()._precheck(data, limits, src)
        accepted = limits.get("components")
        if accepted:
            try:
                kinds = components(data)
            except PimError:
                kinds = set()
            if kinds - accepted:
                raise Refused(f"{src.name}: a {', '.join(sorted(kinds - accepted))} entry, and the calendar at the "
                              f"target takes only {', '.join(sorted(accepted))} (it was there before the "
                              "migration, or its server will not take more)", "unsupported_item")
        cap = limits["instances"]
        if cap is not None:
            try:
                n = instance_count(data, cap)
            except PimError:
                return                             # the server judges what cannot be counted here
            if n > cap:
                raise Refused(f"{src.name}: a series of more than {cap} occurrences, the server's limit "
                              f"(split it, or end it earlier, at the source)", "too_many_instances")

    def _by_uid(self, user: str, collection: str, uid: str) -> str | None:
        body = ('<?xml version="1.0" encoding="utf-8"?><c:calendar-query xmlns:d="DAV:" '
                'xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:getetag/></d:prop><c:filter>'
                '<c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT"><c:prop-filter name="UID">'
                f'<c:text-match collation="i;octet" match-type="equals">{escape(uid)}</c:text-match>'
                "</c:prop-filter></c:comp-filter></c:comp-filter></c:filter></c:calendar-query>")
        resp = self._request("REPORT", user, collection, ok=(207,),
                             headers={"Depth": "1", "Content-Type": "application/xml; charset=utf-8"},
                             content=body.encode("utf-8"))
        for href in self._multistatus(resp, f"REPORT {collection}"):
            if href.rstrip("/") != collection.rstrip("/"):
                data = self._get(user, href)
                try:
                    if data is not None and event_uid(data) == uid:
                        return href
                except PimError:
                    continue
        return None


class CardDav(_Dav):
    """Address books over CardDAV: one address book per source address book, one card per UID."""

    kind = "addressbook"
    marker = ".contacts"
    suffix = ".vcf"
    content_type = "text/vcard; charset=utf-8"
    product = "the CardDAV server"

    def _make_collection(self, user: str, path: str, display: str) -> None:
        self._mkcol(user, path, "MKCOL",
                    '<?xml version="1.0" encoding="utf-8"?><d:mkcol xmlns:d="DAV:" '
                    'xmlns:cr="urn:ietf:params:xml:ns:carddav"><d:set><d:prop>'
                    "<d:resourcetype><d:collection/><cr:addressbook/></d:resourcetype>"
                    f"<d:displayname>{escape(display)}</d:displayname>"
                    "</d:prop></d:set></d:mkcol>")

    def _object(self, src: Path) -> tuple[str, bytes]:
        data = self._read(src)
        try:
            uid, card = with_contact_uid(data)
            return uid, vcard_30(card)
        except PimError as exc:
            raise Refused(f"{src.name}: {exc}", "invalid_data") from None

    def _by_uid(self, user: str, collection: str, uid: str) -> str | None:
        body = ('<?xml version="1.0" encoding="utf-8"?><cr:addressbook-query xmlns:d="DAV:" '
                'xmlns:cr="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/><cr:address-data/></d:prop>'
                '<cr:filter><cr:prop-filter name="UID">'
                f'<cr:text-match collation="i;octet" match-type="equals">{escape(uid)}</cr:text-match>'
                "</cr:prop-filter></cr:filter></cr:addressbook-query>")
        resp = self._request("REPORT", user, collection, ok=(207,),
                             headers={"Depth": "1", "Content-Type": "application/xml; charset=utf-8"},
                             content=body.encode("utf-8"))
        for href, prop in self._multistatus(resp, f"REPORT {collection}").items():
            card = prop.findtext(f"{_CARD}address-data")
            if href.rstrip("/") != collection.rstrip("/") and card and f"UID:{uid}" in card.replace("\r\n ", ""):
                return href
        return None


#: This process's sink for a configuration (one connection pool and collection cache).
sink_for = PerProcess(
    lambda config: (CalDav if isinstance(config, CalDavTarget) else CardDav)(config), close="close")
