"""The notifier's decisions with a fake sender: retries with backoff and a bound, what is never retried,
and a URL that never reaches a log line."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import cast

from hypernode_host.core.events import Event, Kind, Payload
from hypernode_host.ops.notify import Answer, Delivery, Receiver, receiver_id, redacted
from hypernode_host.settings import Settings
from hypernode_host.state import Store

URL = "https://discord.com/api/webhooks/123/SECRET-TOKEN"
FAST = Delivery(timeout_s=1, attempts=4, first_backoff_s=0.001, max_backoff_s=0.004)


class Sender:
    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.calls: list[Payload] = []

    def __call__(self, url: str, payload: Payload, timeout_s: float) -> Answer:
        self.calls.append(payload)
        return self.answers.pop(0) if self.answers else Answer(True, False, "HTTP 204")


def receiver(send: Sender, delivery: Delivery = FAST) -> tuple[Receiver, list[str]]:
    counted: list[str] = []
    store = SimpleNamespace(events=SimpleNamespace(count=counted.append))
    settings = Settings.from_env({"HN_NOTIFY_URL": URL, "HN_NOTIFY_FORMAT": "discord"})
    return Receiver(URL, settings, cast(Store, store), delivery, threading.Event(), send), counted


EVENT = Event(Kind.NODE_OFFLINE, 0, "rig", fields={"offline_s": 200})


def test_a_failing_receiver_is_retried_then_the_event_lands() -> None:
    send = Sender(Answer(False, True, "HTTP 503"), Answer(False, True, "connection refused"))
    r, counted = receiver(send)
    assert r.deliver(EVENT) is True
    assert len(send.calls) == 3 and counted == ["retries", "retries"]


def test_attempts_are_bounded() -> None:
    send = Sender(*[Answer(False, True, "timed out")] * 10)
    r, _ = receiver(send)
    assert r.deliver(EVENT) is False
    assert len(send.calls) == FAST.attempts


def test_an_answer_that_will_not_get_better_is_not_retried() -> None:
    send = Sender(Answer(False, False, "HTTP 404"))
    r, _ = receiver(send)
    assert r.deliver(EVENT) is False and len(send.calls) == 1


def test_a_stopping_notifier_stops_retrying() -> None:
    send = Sender(*[Answer(False, True, "HTTP 500")] * 10)
    r, _ = receiver(send, Delivery(attempts=10, first_backoff_s=30))
    r.stop.set()
    assert r.deliver(EVENT) is False and len(send.calls) == 1


def test_old_news_and_unwanted_events_are_not_sent() -> None:
    send = Sender()
    r, _ = receiver(send, Delivery(max_age_s=60))
    assert r._handle(EVENT) == "dropped"  # at_ms 0: decades old
    r.patterns = ("gpu.*",)
    assert r._handle(EVENT) == "skipped"
    assert send.calls == []


def test_a_webhook_url_is_named_by_its_host_only() -> None:
    assert redacted(URL) == "https://discord.com/..."
    assert "SECRET" not in receiver_id(URL) and len(receiver_id(URL)) == 16
    assert redacted("http://127.0.0.1:8080/topic") == "http://127.0.0.1:8080/..."


def test_a_bad_notify_url_is_refused_without_showing_it() -> None:
    from hypernode_host.errors import ConfigError

    try:
        Settings.from_env({"HN_NOTIFY_URL": "ftp://hooks.example/SECRET-TOKEN"})
    except ConfigError as exc:
        assert "SECRET" not in str(exc) and "HN_NOTIFY_URL" in str(exc)
    else:
        raise AssertionError("accepted")
    settings = Settings.from_env({"HN_NOTIFY_URL": "http://a.example/x, https://b.example/y"})
    assert settings.notify_url == ("http://a.example/x", "https://b.example/y")
