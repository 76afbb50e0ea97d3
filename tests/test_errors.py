"""umstieg's errors cross process boundaries intact: the Dask path pickles whatever escapes a task,
and an error that cannot be unpickled there hides the real cause behind a TypeError."""

from __future__ import annotations

import pickle

import cloudpickle
import pytest

from core.errors import ConfigError, FatalError, ItemError, TransientError, UserStopped
from core.outcomes import Outcome


def _errors():
    from clients.imap import LoginRefused
    from flows.steps import _ConversionFailed
    from sinks.groupware import Refused
    from sinks.imap import MailboxFull
    from sinks.webdav import Locked, QuotaExceeded
    return [
        UserStopped("the account of t-anna is full", "t-anna"),
        QuotaExceeded("507 Insufficient Storage for t-anna", "t-anna", "svc-migration"),
        MailboxFull("NO [OVERQUOTA] mailbox of t-ben is full", "t-ben"),
        Refused("the event is larger than 10 MiB", "too_large"),
        _ConversionFailed(Outcome.TIMEOUT, "LibreOffice took longer than 120 s"),
        TransientError("503 Service Unavailable", retry_after=7.5),
        Locked("locked by another client", retry_at=1_700_000_000.0),
        LoginRefused("the server refused the login of t-carl", code="AUTHENTICATIONFAILED"),
        ConfigError("the department file names no target"),
        FatalError("no LibreOffice worker is left"),
        ItemError("cannot read a.docx at the source"),
    ]


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_every_error_a_task_can_raise_survives_pickling(dumps):
    for error in _errors():
        back = pickle.loads(dumps(error))
        assert type(back) is type(error)
        assert str(back) == str(error) and back.args == error.args
        assert back.__dict__ == error.__dict__, type(error).__name__      # owner, account, reason, ...


def test_what_the_flows_read_from_an_unpickled_error_is_there():
    from flows.steps import _ConversionFailed
    from sinks.webdav import QuotaExceeded
    quota = pickle.loads(pickle.dumps(QuotaExceeded("full", "t-anna", "svc")))
    assert isinstance(quota, UserStopped) and quota.owner == "t-anna" and quota.account == "svc"
    failed = pickle.loads(pickle.dumps(_ConversionFailed(Outcome.CRASHED, "LibreOffice died")))
    assert isinstance(failed, ItemError) and failed.reason == "conversion_crashed"
    transient = pickle.loads(pickle.dumps(TransientError("slow down", retry_after=3)))
    assert transient.retry_after == 3
