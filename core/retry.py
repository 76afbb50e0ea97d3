"""One retry policy for every network call: how often, how long to wait, and whose wait counts.

Throttling and short outages are normal in a migration (Graph answers 429 with Retry-After,
Exchange ErrorServerBusy with BackOffMilliseconds, Nextcloud 503 while it upgrades): they are
waited for, a bounded number of times, then the item fails as `transient` and a later rerun
takes it up. This module holds the whole rule:

- `RetryPolicy`: attempts (the first included), the backoff when the server names no wait
  (doubling from `first_wait`, with jitter so that many workers do not come back at the same
  instant), the longest single wait (`max_wait`: a server asking for longer ends the retries at
  once, since waiting an hour inside a chunk holds its worker for nothing), and a cap on the
  waits of one thing together (`max_total_wait`).
- `POLICIES`: each system's defaults in one table; a department file's `retry:` block on a
  source or target changes some of them (`policy_for`).
- `answer_error`: the single function that turns an HTTP answer (429, 500/502/503/504 and their
  Retry-After, in seconds or as an HTTP date) into a `TransientError` with its `retry_after`.
  Exchange's ErrorServerBusy reaches the same policy through exchangelib (sources/ews.py).
- `with_retries`: runs a step under a policy.

**Who retries, when calls are nested.** A step (extract, load, verify) runs under `with_retries`
and may call a client that retries its own requests (Graph, EWS, S3 through botocore, a chunk of
a Nextcloud upload). If both repeated the same failure, the counts would multiply (one Graph item
could be asked for 16 times). The rule: *the innermost layer that can repeat a request safely
retries it; an error it gives up on is marked spent (`TransientError.attempts`) and every outer
layer passes it on untouched.* Errors no policy has retried yet (a PUT whose answer was lost,
which only the step can repeat, after asking the target whether the file arrived) are retried by
the step. So one request is sent at most `attempts` times, whichever layer retries it.

Written here rather than with tenacity: the loop itself is a dozen lines; what this project needs
around it (the spent mark shared by nested layers, Retry-After in both forms, per-system tables
merged with a department's settings, a decision function exchangelib's own loop can ask) would be
written on top of tenacity all the same, and every worker would carry one dependency more.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.errors import TransientError

__all__ = ["RetryPolicy", "POLICIES", "TRANSIENT_STATUS", "policy_for", "with_retries", "answer_error",
           "retry_after_of", "governed", "RETRY_WAITS"]

log = logging.getLogger("umstieg.retry")

#: HTTP answers that mean "not now": too many requests, and a server failing or overloaded for a moment.
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


class RetryPolicy(BaseModel):
    """How often and how long one request (or one step) is tried again while it fails transiently.

    In a department file, a `retry:` block on a source or target sets any of these fields; the
    others keep the system's defaults (`POLICIES`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=4, ge=1, le=20, description="tries of one request in all, the first included")
    first_wait: float = Field(default=2.0, ge=0, description="seconds before the second try when the server "
                                                             "names no wait; doubles with every try")
    max_wait: float = Field(default=60.0, ge=0, description="longest single wait; a server asking for longer "
                                                            "(Retry-After) ends the tries at once: a later rerun "
                                                            "takes the item up")
    max_total_wait: float = Field(default=300.0, ge=0, description="the waits of one request together stay below this")
    jitter: float = Field(default=0.25, ge=0, le=1, description="share of each computed wait drawn at random, "
                                                                "so that many workers do not return together")
    waits: tuple[float, ...] | None = Field(default=None, description="a fixed list of waits instead of the "
                                                                       "doubling (taken as written, no jitter)")

    def wait_before(self, tried: int, asked: float | None = None, waited: float = 0.0) -> float | None:
        """Seconds to wait before try number `tried + 1`, after `tried` failed tries that waited
        `waited` seconds in all; None: give up. `asked` is the server's own wait (Retry-After,
        BackOffMilliseconds), honoured as asked when it is at most `max_wait`."""
        if tried >= self.attempts:
            return None
        if asked is not None:
            wait = max(float(asked), 0.0)
            if wait > self.max_wait:
                return None
        elif self.waits is not None:
            wait = self.waits[min(tried - 1, len(self.waits) - 1)] if self.waits else 0.0
        else:
            wait = min(self.first_wait * 2 ** (tried - 1), self.max_wait)
            wait -= wait * self.jitter * random.random()
        if waited + wait > self.max_total_wait:
            return None
        return wait

    def most_requests(self) -> int:
        """How often one request is sent at most under this policy (what the documentation promises)."""
        return self.attempts


#: The default policy of every system, in one table. Keys are the `type` of a source or target
#: (`m365`, `onedrive` and `sharepoint` share Graph's); `step` is the flows' own retry of an item's
#: step where no client retries inside.
POLICIES: dict[str, RetryPolicy] = {
    # Graph: 4 concurrent requests per mailbox, 429 with Retry-After of a few seconds is routine
    "graph": RetryPolicy(attempts=4, first_wait=2.0, max_wait=60.0, max_total_wait=180.0),
    # Exchange on-premises: ErrorServerBusy with BackOffMilliseconds; back-offs are short and frequent
    "ews": RetryPolicy(attempts=6, first_wait=10.0, max_wait=300.0, max_total_wait=600.0),
    # Nextcloud / OX Drive / CalDAV / CardDAV: 503 in maintenance, 429 from the brute-force throttle
    "webdav": RetryPolicy(attempts=4, first_wait=2.0, max_wait=300.0, max_total_wait=600.0),
    "dav": RetryPolicy(attempts=4, first_wait=2.0, max_wait=300.0, max_total_wait=600.0),
    # S3: botocore repeats throttled (SlowDown) and 5xx answers itself, this many times in all
    "s3": RetryPolicy(attempts=3, first_wait=1.0, max_wait=300.0, max_total_wait=300.0),
    "imap": RetryPolicy(attempts=4, first_wait=2.0, max_wait=300.0, max_total_wait=600.0),
    "smb": RetryPolicy(attempts=4, first_wait=2.0, max_wait=60.0, max_total_wait=300.0),
    # the flows' retry of an item's step (2, 10, 30 s: a server that said "not now")
    "step": RetryPolicy(attempts=4, waits=(2.0, 10.0, 30.0), max_wait=300.0, max_total_wait=600.0),
}

#: Which table entry a source or target `type` uses.
_SYSTEM_OF = {"m365": "graph", "onedrive": "graph", "sharepoint": "graph", "ews": "ews",
              "nextcloud": "webdav", "oxdrive": "webdav", "webdav": "webdav",
              "caldav": "dav", "carddav": "dav", "s3": "s3", "s3archive": "s3", "imap": "imap", "smb": "smb"}

#: Waits of the flows' step retries (kept for callers that name them).
RETRY_WAITS = POLICIES["step"].waits


def policy_for(system: str, settings: RetryPolicy | None = None) -> RetryPolicy:
    """The policy of a system (`graph`, or a source/target `type` such as `nextcloud`), with the
    fields a department file set in its `retry:` block (`settings`) in place of the defaults."""
    base = POLICIES.get(_SYSTEM_OF.get(system, system), POLICIES["step"])
    if settings is None:
        return base
    return base.model_copy(update={name: getattr(settings, name) for name in settings.model_fields_set})


def governed(exc: TransientError, policy: RetryPolicy | None) -> TransientError:
    """`exc`, marked to be retried under `policy` (the system's) by whichever layer retries it."""
    if policy is not None and getattr(exc, "policy", None) is None:
        exc.policy = policy
    return exc


def with_retries(step: Callable[..., Any], *args, policy: RetryPolicy | None = None,
                 waits: tuple[float, ...] | None = None, sleep: Callable[[float], Any] = time.sleep,
                 retry_spent: bool = False):
    """`step(*args)`, tried again on TransientError as the policy says (the server's Retry-After first).

    The policy is `policy`, else the one the error names (`governed`: the system that raised it),
    else the flows' step policy; `waits` is a fixed list of waits (tests, the chunk runner). An
    error an inner layer already retried (`attempts` set) is passed on at once, so that nested
    layers do not multiply their tries (see the module doc), unless `retry_spent` (the chunk
    runner: a chunk is a new unit of work). The error that ends it carries how often it was tried.
    """
    fixed = RetryPolicy(attempts=len(waits) + 1, waits=waits, max_wait=float("inf"),
                        max_total_wait=float("inf")) if waits is not None else None
    tried, waited = 0, 0.0
    while True:
        try:
            return step(*args)
        except TransientError as exc:
            if exc.attempts and not retry_spent:
                raise
            tried += 1
            rule = policy or fixed or getattr(exc, "policy", None) or POLICIES["step"]
            wait = rule.wait_before(tried, exc.retry_after, waited)
            if wait is None:
                exc.attempts = tried
                raise
            log.info("%s; trying again in %.1f s (try %d of %d)", exc, wait, tried + 1, rule.attempts)
            sleep(wait)
            waited += wait


def retry_after_of(value: str | None, cap: float | None = None) -> float | None:
    """Seconds a Retry-After value asks for (RFC 9110 §10.2.3: seconds, or an HTTP date), never below
    0 and at most `cap`; None when there is none or it cannot be read."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:                     # NaN
        return None
    seconds = max(seconds, 0.0)
    return seconds if cap is None else min(seconds, cap)


#: The longest Retry-After an error reports; longer means "not today" all the same.
REPORTED_WAIT_CAP = 3600.0


def answer_error(status: int, headers: Mapping[str, str] | None, what: str,
                 policy: RetryPolicy | None = None) -> TransientError | None:
    """The TransientError an HTTP answer means (429, 5xx overload), with the wait it asked for;
    None when the answer is not a transient one. `policy` is the system's, for the layer that retries."""
    if status not in TRANSIENT_STATUS:
        return None
    asked = retry_after_of((headers or {}).get("Retry-After"), REPORTED_WAIT_CAP)
    said = {429: "too many requests", 500: "server error", 502: "bad gateway", 503: "busy or in maintenance",
            504: "gateway timeout"}[status]
    return governed(TransientError(f"{what}: HTTP {status} ({said})", retry_after=asked), policy)
