"""The notifier: the node's events (state/events.py), POSTed to each HN_NOTIFY_URL in HN_NOTIFY_FORMAT.

It runs in a process of its own (`hypernode-host notify`, a child of `up` when a URL is set) with
one thread per receiver, so a receiver that is down or slow delays nothing but its own deliveries:
never a job, the bridge or another receiver. Each receiver reads the stream from its own cursor,
kept in Redis, so a restart goes on where it stopped.

Bounded everywhere: each request has a timeout, each event a number of attempts with exponential
backoff (429, 408 and 5xx answers and network errors are retried; any other answer will not get
better and drops the event), an event older than ``max_age_s`` when its turn comes is dropped as
news no longer worth sending, and the stream itself keeps only the newest events. A receiver seen
for the first time starts ``first_look_back_s`` back, not at the oldest event kept.

Webhook URLs carry their secret (Discord's and Slack's do), so logs name a receiver by its host only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from hypernode_host import AGENT_VERSION
from hypernode_host.core.clock import now_ms
from hypernode_host.core.events import Event, Format, Kind, Payload, render, wanted
from hypernode_host.settings import Settings
from hypernode_host.state import RedisError, Store

log = logging.getLogger(__name__)

RETRIED_STATUSES = frozenset({408, 425, 429})
REDIS_TIMEOUT_S = 10.0
REDIS_RETRY_S = 2.0


@dataclass(frozen=True)
class Delivery:
    """How hard the notifier tries; the defaults suit production, tests shrink them."""

    timeout_s: float = 10.0  # per request
    attempts: int = 5  # per event and receiver
    first_backoff_s: float = 1.0  # doubles after each failed attempt
    max_backoff_s: float = 60.0
    max_age_s: float = 3600.0
    first_look_back_s: float = 600.0
    block_ms: int = 1000


def receiver_id(url: str) -> str:
    """A receiver's name in Redis: a digest, never the URL (a secret)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def redacted(url: str) -> str:
    """The URL as logs show it: scheme and host only."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}/..."


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a hop: urllib would re-send the POST as a GET without its body."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


@dataclass(frozen=True)
class Answer:
    ok: bool
    retry: bool  # worth another attempt
    detail: str  # "HTTP 204", "timed out", ...
    retry_after_s: float | None = None


def post(url: str, payload: Payload, timeout_s: float) -> Answer:
    """One POST; what it got, never an exception for anything the network or the receiver did."""
    headers = {**payload.headers, "User-Agent": f"hypernode-host/{AGENT_VERSION}"}
    request = urllib.request.Request(url, data=payload.body, headers=headers, method="POST")  # noqa: S310 (http(s) only: Settings)
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read(65536)
            return Answer(True, False, f"HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        code = exc.code
        after = exc.headers.get("Retry-After") if exc.headers else None
        wait = float(after) if after and after.strip().isdigit() else None
        exc.close()
        return Answer(False, code in RETRIED_STATUSES or code >= 500, f"HTTP {code}", wait)
    except TimeoutError:
        return Answer(False, True, f"no answer in {timeout_s:g} s")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Answer(False, True, str(reason) or type(exc).__name__)


class Receiver:
    """One URL's deliveries, in order, on its own thread."""

    def __init__(
        self,
        url: str,
        settings: Settings,
        store: Store,
        delivery: Delivery,
        stop: threading.Event,
        send: Callable[[str, Payload, float], Answer] = post,
    ) -> None:
        self.url = url
        self.name = redacted(url)
        self.id = receiver_id(url)
        self.fmt = Format(settings.notify_format)
        self.patterns = settings.notify_events
        self.store = store
        self.delivery = delivery
        self.stop = stop
        self.send = send
        self.node_id: str | None = None

    def run(self) -> None:
        cursor: str | None = None
        while not self.stop.is_set():
            try:
                if cursor is None:
                    cursor = self._start()
                self.node_id = self.store.node.node_id()
                for entry_id, event in self.store.events.wait(cursor, self.delivery.block_ms):
                    if self.stop.is_set():
                        return
                    counter = self._handle(event)
                    self.store.events.advance(self.id, entry_id, counter)
                    cursor = entry_id
            except RedisError as exc:
                log.warning("notifier %s: Redis unavailable (%s); retrying", self.name, exc)
                self.stop.wait(REDIS_RETRY_S)

    def _start(self) -> str:
        kept = self.store.events.cursor(self.id)
        if kept is not None:
            return kept
        back = max(now_ms() - int(self.delivery.first_look_back_s * 1000), 0)
        return f"{back}-0"

    def _handle(self, event: Event) -> str:
        """Deliver one event (or skip it); the counter it goes to: delivered, dropped or skipped."""
        if not wanted(event.kind, self.patterns):
            return "skipped"
        age_s = (now_ms() - event.at_ms) / 1000
        if age_s > self.delivery.max_age_s:
            log.warning("notifier %s: %s from %.0f s ago dropped: too old to send", self.name, event.kind, age_s)
            return "dropped"
        if event.node_id is None and self.node_id is not None:
            event = Event(event.kind, event.at_ms, event.node, self.node_id, event.fields)
        return "delivered" if self.deliver(event) else "dropped"

    def deliver(self, event: Event) -> bool:
        """Up to ``attempts`` tries with backoff; True once the receiver took it."""
        payload = render(event, self.fmt)
        delay = self.delivery.first_backoff_s
        for attempt in range(1, self.delivery.attempts + 1):
            answer = self.send(self.url, payload, self.delivery.timeout_s)
            if answer.ok:
                log.debug("notifier %s: %s delivered (%s)", self.name, event.kind, answer.detail)
                return True
            last = attempt == self.delivery.attempts
            if not answer.retry or last:
                log.warning(
                    "notifier %s: %s dropped after %d attempt(s): %s", self.name, event.kind, attempt, answer.detail
                )
                return False
            wait = min(answer.retry_after_s or delay, self.delivery.max_backoff_s)
            log.info(
                "notifier %s: %s not delivered (%s); retrying in %.1f s", self.name, event.kind, answer.detail, wait
            )
            self._count_retry()
            if self.stop.wait(wait):
                return False
            delay = min(delay * 2, self.delivery.max_backoff_s)
        return False  # pragma: no cover: the loop returns on its last attempt

    def _count_retry(self) -> None:
        with contextlib.suppress(RedisError):  # a counter is not worth waiting for Redis
            self.store.events.count("retries")


def run_notifier(settings: Settings, stop: threading.Event, delivery: Delivery | None = None) -> None:
    """Deliver events to every HN_NOTIFY_URL until ``stop``; nothing to do (logged) without a URL."""
    if not settings.notify_url:
        log.warning("HN_NOTIFY_URL is not set: no events are delivered")
        stop.wait()
        return
    delivery = delivery or Delivery()
    stores = [Store.open(settings, timeout_s=REDIS_TIMEOUT_S + delivery.block_ms / 1000) for _ in settings.notify_url]
    receivers = [
        Receiver(url, settings, store, delivery, stop) for url, store in zip(settings.notify_url, stores, strict=True)
    ]
    threads = [threading.Thread(target=r.run, name=f"notify-{r.id[:6]}", daemon=True) for r in receivers]
    log.info("notifier: %s events to %s", settings.notify_format, ", ".join(r.name for r in receivers))
    for thread in threads:
        thread.start()
    try:
        stop.wait()
    finally:
        deadline = time.monotonic() + delivery.timeout_s + 1  # a request in flight ends by its timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))
        for store in stores:
            store.close()


@dataclass(frozen=True)
class TestOutcome:
    receiver: str  # redacted
    ok: bool
    detail: str


def send_test(settings: Settings, timeout_s: float = Delivery.timeout_s) -> list[TestOutcome]:
    """A test event to every HN_NOTIFY_URL, now and once each (not through Redis): what each answered."""
    event = Event(Kind.TEST, now_ms(), settings.node_name, None, {})
    payload = render(event, Format(settings.notify_format))
    outcomes = []
    for url in settings.notify_url:
        answer = post(url, payload, timeout_s)
        outcomes.append(TestOutcome(redacted(url), answer.ok, answer.detail))
    return outcomes
