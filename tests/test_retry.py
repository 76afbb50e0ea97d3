"""One retry policy (core/retry.py): its decisions with an injected sleep, and, through the real client
libraries against the fault-injecting test servers, that an item a server keeps refusing is asked
for at most `attempts` times, with the flows' step retry around the client's own (as the flows run it)."""

from __future__ import annotations

import email.utils
import os
import re
import time

import pytest

from core.errors import ItemError, TransientError
from core.retry import POLICIES, RetryPolicy, answer_error, policy_for, retry_after_of, with_retries


class Sleeps(list):
    """The waits asked for, instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def always(error_factory):
    """A step that fails every time with a new error from `error_factory`; `.calls` counts its calls."""
    def step():
        step.calls += 1
        raise error_factory()
    step.calls = 0
    return step


# ------------------------------------------------------------------------------ the policy itself
def test_retry_after_in_seconds_and_as_a_date_is_waited_for():
    in_30s = email.utils.formatdate(time.time() + 30, usegmt=True)
    answers = iter([TransientError("429", retry_after=retry_after_of("7")),
                    TransientError("503", retry_after=retry_after_of(in_30s))])
    calls, sleeps = [], Sleeps()

    def step():
        calls.append(1)
        error = next(answers, None)
        if error is not None:
            raise error
        return "ok"

    assert with_retries(step, policy=RetryPolicy(attempts=4, max_wait=60), sleep=sleeps) == "ok"
    assert len(calls) == 3
    assert sleeps[0] == 7 and 27 <= sleeps[1] <= 30


def test_retry_after_forms_and_caps():
    assert retry_after_of("120", cap=60) == 60
    assert retry_after_of("Wed, 21 Oct 2015 07:28:00 GMT") == 0          # a date in the past: now
    assert retry_after_of("soon") is None and retry_after_of(None) is None and retry_after_of("nan") is None
    assert retry_after_of("-5") == 0


def test_a_wait_longer_than_the_policy_takes_ends_the_tries_at_once():
    step = always(lambda: TransientError("429", retry_after=3600))
    sleeps = Sleeps()
    with pytest.raises(TransientError) as info:
        with_retries(step, policy=RetryPolicy(attempts=5, max_wait=300), sleep=sleeps)
    assert step.calls == 1 and sleeps == []
    assert info.value.retry_after == 3600 and info.value.attempts == 1    # the flows rerun it later


def test_attempts_are_counted_and_the_error_says_how_many():
    step = always(lambda: TransientError("503"))
    sleeps = Sleeps()
    with pytest.raises(TransientError) as info:
        with_retries(step, policy=RetryPolicy(attempts=3, first_wait=2, jitter=0), sleep=sleeps)
    assert step.calls == 3 and info.value.attempts == 3
    assert sleeps == [2, 4]                                                  # doubling backoff


def test_errors_that_are_not_transient_are_not_retried():
    for error in (ItemError("403"), ValueError("bug")):
        step = always(lambda error=error: error)
        with pytest.raises(type(error)):
            with_retries(step, policy=RetryPolicy(attempts=5), sleep=Sleeps())
        assert step.calls == 1


def test_the_waits_of_one_request_together_stay_under_the_cap():
    step = always(lambda: TransientError("503"))
    sleeps = Sleeps()
    with pytest.raises(TransientError):
        with_retries(step, policy=RetryPolicy(attempts=10, first_wait=10, jitter=0, max_wait=100,
                                              max_total_wait=35), sleep=sleeps)
    assert sleeps == [10, 20] and step.calls == 3                            # 10 + 20 + 40 > 35
    assert sum(sleeps) <= 35


def test_jitter_only_shortens_a_computed_wait():
    policy = RetryPolicy(attempts=20, first_wait=8, jitter=0.5, max_wait=8)
    waits = [policy.wait_before(1) for _ in range(200)]
    assert all(4 <= w <= 8 for w in waits) and len(set(waits)) > 1
    assert {policy.wait_before(1, asked=3) for _ in range(20)} == {3}      # the server's own wait as asked


def test_nested_layers_do_not_multiply_their_tries():
    """The client retries its request; the step around it passes the spent error on."""
    request = always(lambda: TransientError("503"))

    def client_call():
        return with_retries(request, policy=RetryPolicy(attempts=4, jitter=0), sleep=Sleeps())

    with pytest.raises(TransientError) as info:
        with_retries(client_call, policy=RetryPolicy(attempts=4), sleep=Sleeps())
    assert request.calls == 4 and info.value.attempts == 4
    request.calls = 0
    with pytest.raises(TransientError):                                      # the chunk runner's new unit of work
        with_retries(client_call, waits=(0.0,), sleep=Sleeps(), retry_spent=True)
    assert request.calls == 8


def test_an_error_names_its_systems_policy_for_the_layer_that_retries_it():
    step = always(lambda: answer_error(503, {"Retry-After": "1"}, "PUT /x", policy=RetryPolicy(attempts=2)))
    with pytest.raises(TransientError):
        with_retries(step, sleep=Sleeps())                                  # no policy given: the error's
    assert step.calls == 2


def test_http_answers_become_transient_errors_with_their_wait():
    busy = answer_error(429, {"Retry-After": "12"}, "GET /x")
    assert isinstance(busy, TransientError) and busy.retry_after == 12 and "429" in str(busy)
    assert answer_error(503, {}, "GET /x").retry_after is None
    assert {s for s in (429, 500, 502, 503, 504) if answer_error(s, {}, "x") is not None} == {429, 500, 502, 503, 504}
    assert answer_error(404, {}, "x") is None and answer_error(200, {}, "x") is None


def test_a_systems_settings_change_only_what_they_name():
    settings = RetryPolicy.model_validate({"attempts": 7})
    graph = policy_for("m365", settings)
    assert graph.attempts == 7 and graph.max_wait == POLICIES["graph"].max_wait
    assert policy_for("onedrive") == POLICIES["graph"] and policy_for("nextcloud") == POLICIES["webdav"]
    assert policy_for("something-new") == POLICIES["step"]


def test_a_department_file_sets_a_source_and_a_targets_policy(tmp_path, monkeypatch):
    import yaml

    from core.department import load_department
    from sinks.webdav import Nextcloud
    from sources.ews import _ews_policy
    from sources.graph import GraphClient

    monkeypatch.setenv("RETRY_TEST_SECRET", "not-used")
    path = tmp_path / "amt.yaml"
    path.write_text(yaml.safe_dump({
        "name": "amt", "work_dir": str(tmp_path / "work"), "users": [{"source": "anna", "target": "anna"}],
        "sources": [{"name": "exchange", "type": "ews", "url": "https://ews.example/EWS/Exchange.asmx",
                     "username": "svc", "password": "env:RETRY_TEST_SECRET", "max_wait": 30,
                     "retry": {"attempts": 2}},
                    {"name": "m365", "type": "m365", "tenant_id": "t", "client_id": "c",
                     "client_secret": "env:RETRY_TEST_SECRET", "retry": {"max_wait": 5, "first_wait": 1}}],
        "target": {"type": "nextcloud", "url": "https://cloud.example", "username": "svc",
                   "password": "env:RETRY_TEST_SECRET", "retry": {"attempts": 6, "waits": [1, 5]}},
    }), encoding="utf-8")
    dept = load_department(path)
    ews, m365 = dept.sources
    assert (_ews_policy(ews).attempts, _ews_policy(ews).max_wait) == (2, 30)   # the older max_wait still counts
    client, sink = GraphClient(m365), Nextcloud(dept.target)
    graph = client.retry
    assert (graph.attempts, graph.max_wait, graph.first_wait) == (4, 5, 1)     # the rest: Graph's defaults
    assert sink.retry.attempts == 6 and sink.retry.waits == (1, 5)
    client.close()
    with pytest.raises(Exception, match="attempts"):
        RetryPolicy.model_validate({"attempts": 0})


# ------------------------------------------------------------------------------ Microsoft Graph
@pytest.fixture
def graph(tmp_path, monkeypatch):
    from servers.graph import GraphTestServer
    monkeypatch.setenv("GRAPH_RETRY_SECRET", "retry-secret-1")
    with GraphTestServer(tmp_path, client_secret="retry-secret-1") as server:
        yield server


def test_a_graph_item_the_server_keeps_refusing_is_asked_for_attempts_times(graph, tmp_path):
    """Before one policy: the client's 4 tries inside each of the step's 4 tries, 16 requests."""
    from core.department import OneDriveSource
    from sources.graph import GraphClient
    from sources.onedrive import DriveSource

    upn = "anna@contoso.example"
    drive = graph.add_user(upn)
    item = graph.put_file(drive, "Bericht.docx", b"docx bytes")
    config = OneDriveSource(name="od", tenant_id=graph.tenant, client_id=graph.client_id,
                            client_secret="env:GRAPH_RETRY_SECRET", authority=graph.authority,
                            graph_url=graph.graph_url, ca_file=graph.ca_file, timeout=10)
    sleeps = Sleeps()
    src = DriveSource(config, client=GraphClient(config, sleep=sleeps))
    [ref] = list(src.discover(upn, upn))
    graph.throttle(100, retry_after="2", status=503)
    before = len(graph.log)
    with pytest.raises(TransientError) as info:
        with_retries(src.extract, upn, ref.location, tmp_path / "x", ref.key, sleep=sleeps)   # as the flows do
    asked = [path for _, path, _ in graph.log[before:] if item["id"] in path]
    assert len(asked) == POLICIES["graph"].attempts == 4
    assert info.value.attempts == 4 and sleeps == [2.0, 2.0, 2.0]


# ------------------------------------------------------------------------------ Exchange (EWS)
def test_an_ews_item_exchange_keeps_calling_busy_is_asked_for_attempts_times(tmp_path, monkeypatch):
    """Before one policy: exchangelib repeated a request as long as each back-off was short."""
    from email.message import EmailMessage
    from exchangelib.protocol import Protocol

    from core.department import EwsSource
    from servers.ews import EwsTestServer
    from sources.ews import source_for

    monkeypatch.setenv("EWS_RETRY_PASSWORD", "pw-retry-1")
    Protocol.clear_cache()
    anna = "anna@example.org"
    msg = EmailMessage()
    msg["Subject"], msg["Message-ID"] = "Sitzung", "<retry-1@example.org>"
    msg.set_content("Guten Tag")
    with EwsTestServer(users={"svc": "pw-retry-1"}, impersonation={"svc": {anna}}) as server:
        item_id = server.mailbox(anna).add_message(msg.as_bytes())
        source = source_for(EwsSource(name="exchange", url=server.url, username="svc",
                                      password="env:EWS_RETRY_PASSWORD", auth="basic"))
        [ref] = list(source.discover("anna", anna))
        server.busy(100, back_off_ms=20)
        with pytest.raises(TransientError) as info:
            with_retries(source.extract, anna, ref.location, tmp_path / "m.eml", item_id, sleep=Sleeps())
        assert server.busy_answers == POLICIES["ews"].attempts == 6 and info.value.attempts == 6
    Protocol.clear_cache()


# ------------------------------------------------------------------------------ Nextcloud, real server
@pytest.fixture
def proxy(nextcloud_server):
    from servers.faultproxy import FaultProxy
    with FaultProxy(nextcloud_server.url) as p:
        yield p


def _sink(proxy, nextcloud_server, monkeypatch, **extra):
    from core.department import NextcloudTarget
    from sinks.webdav import Nextcloud
    user = nextcloud_server.new_user("t-retry")
    env = "NCPW_" + re.sub(r"[^A-Za-z0-9]", "_", user.login).upper()
    monkeypatch.setenv(env, user.secret)
    config = NextcloudTarget(url=proxy.url, app_passwords={user.login: f"env:{env}"}, timeout=30,
                             chunk_threshold=5 << 20, chunk_size=5 << 20, **extra)
    return Nextcloud(config, sleep=Sleeps()), user


def test_a_file_nextcloud_keeps_refusing_is_sent_attempts_times(nextcloud_server, proxy, monkeypatch, tmp_path):
    """A plain PUT is retried by the step only (the sink cannot tell a lost answer from a refusal);
    a chunk of a large upload by the sink only: before one policy, each chunk 4 × 4 times."""
    from servers.faultproxy import Fault

    sink, user = _sink(proxy, nextcloud_server, monkeypatch)
    small = tmp_path / "klein.txt"
    small.write_bytes(b"x" * 100)
    proxy.faults = [Fault(status=503, retry_after="0", methods=("PUT",), path_contains="/files/")]
    with pytest.raises(TransientError):
        with_retries(sink.put, user.login, "klein.txt", small, sleep=Sleeps())
    assert len(proxy.seen("PUT", "klein.txt")) == POLICIES["webdav"].attempts == 4

    big = tmp_path / "gross.bin"
    big.write_bytes(os.urandom(6 << 20))
    proxy.clear()
    proxy.faults = [Fault(status=503, retry_after="0", methods=("PUT",), path_contains="/uploads/")]
    with pytest.raises(TransientError) as info:
        with_retries(sink.put, user.login, "gross.bin", big, sleep=Sleeps())
    chunk_puts = proxy.seen("PUT", "/uploads/")
    assert len(chunk_puts) == 4 and len({r["path"] for r in chunk_puts}) == 1     # the first chunk, 4 times
    assert info.value.attempts == 4
    proxy.clear()
    assert "gross.bin" not in nextcloud_server.tree(user)
