"""The settings of the CalDAV and CardDAV targets (sinks/groupware.py).

A light module: it imports no client library, so that the department model can know every
system's settings (core/plugins.py registers this model) without loading any of them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sinks.webdav_config import WebDavTarget

__all__ = ["DavAccount", "CalDavTarget", "CardDavTarget"]


class DavAccount(WebDavTarget):
    """A CalDAV or CardDAV server: `<url>/<home>` per user."""

    flavour: Literal["nextcloud", "ox", "generic"] = "generic"


class CalDavTarget(DavAccount):
    """Calendars: Nextcloud (`/remote.php/dav/calendars/USER/`), OX (`/servlet/dav`) or any CalDAV server."""

    type: Literal["caldav"] = "caldav"
    max_instances: int | None = Field(
        default=None, ge=1,
        description="the server's cap on occurrences of one recurring event (default: what the calendar "
                    "announces, else 3500 for Nextcloud); a longer series fails as too_many_instances")
    invitations: Literal["suppress", "server"] = Field(
        default="suppress",
        description="suppress: ORGANIZER and ATTENDEE are marked SCHEDULE-AGENT=CLIENT (RFC 6638) so that "
                    "the server sends no invitation for a migrated meeting; server: the server schedules "
                    "as for a meeting just created (mail to every attendee)")
    max_calendars: int | None = Field(
        default=None, ge=-1,
        description="calendars (and subscriptions) one account may have, -1 for no limit (default: 30 for "
                    "Nextcloud, its app config dav/maximumCalendarsSubscriptions; none for other servers)")
    new_calendars_per_period: int | None = Field(
        default=None, ge=1,
        description="new calendars one account may make per calendar_creation_period (default: 10 for "
                    "Nextcloud, dav/rateLimitCalendarCreation; none for other servers)")
    calendar_creation_period: int = Field(
        default=3600, ge=1,
        description="seconds of that window (Nextcloud: dav/rateLimitPeriodCalendarCreation, 3600)")


class CardDavTarget(DavAccount):
    """Address books: Nextcloud (`/remote.php/dav/addressbooks/users/USER/`), OX or any CardDAV server."""

    type: Literal["carddav"] = "carddav"
