"""Wake-ups: idle workers learn at once that a queue has work (Redis pub/sub, `TASKHUB_WAKEUP_URL`).

A wake-up is a hint, never the truth: the database is. It is published after the transaction
that made a task runnable commits (`notify`: never for a rolled-back one), on one channel per
queue; a worker (`Listener`) subscribes to the channels of the queues it serves and claims at
once when one speaks. A lost or duplicate wake-up costs a poll, nothing more: workers keep
polling, once per poll interval while wake-ups work and with their adaptive back-off while they
do not.

Publishing never fails a request and never waits long: a short socket timeout, and after a
failure no new try for PUBLISH_RETRY_SECONDS (each failure and each skipped wake-up is counted
in `taskhub_wakeups_total`; the warning is logged once per outage).

Channels are named after the database (a hash of its name), so TaskHub installations sharing a
Redis server never wake each other: `taskhub:wakeup:<db hash>:<queue name>`, and
`taskhub:wakeup:<db hash>` for "some queue" (every worker listens to it).
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.db import connections, transaction
from redis.backoff import NoBackoff
from redis.retry import Retry

from core import metrics

logger = logging.getLogger("taskhub.wakeups")

# Redis answers in well under a millisecond on a LAN; a server that does not answer in this
# long counts as down rather than holding up the request that enqueued.
SOCKET_TIMEOUT_SECONDS = 0.25
PUBLISH_RETRY_SECONDS = 5.0
# A worker's listener reconnects after these delays (the last one repeats).
LISTEN_RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)
# How long one read of the subscription blocks (the listener checks for stop between reads) and
# how often it pings a silent connection, so a server that vanished without closing is noticed.
LISTEN_READ_SECONDS = 0.25
HEALTH_CHECK_SECONDS = 5
ANY_QUEUE = None  # a wake-up for "some queue" (its name was not at hand)


def enabled() -> bool:
    """Return True when `TASKHUB_WAKEUP_URL` names a Redis server."""
    return bool(settings.TASKHUB_WAKEUP_URL)


def channel_prefix() -> str:
    """Return the prefix of this database's channels."""
    name = str(connections["default"].settings_dict["NAME"])
    return "taskhub:wakeup:" + hashlib.sha256(name.encode()).hexdigest()[:12]


def channel(queue_name: str | None) -> str:
    """Return the channel of one queue, or the one for "some queue" (ANY_QUEUE)."""
    prefix = channel_prefix()
    return prefix if queue_name is None else f"{prefix}:{queue_name}"


def safe_url(url: str) -> str:
    """Return `url` without its credentials, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _client(url: str, **options: object) -> redis.Redis:
    # No retries inside redis-py: a failure is handled here (publish: skip; listen: reconnect later).
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
        **options,
    )


# --- Publishing ------------------------------------------------------------------------------


def notify(queue_names: Iterable[str | None]) -> None:
    """Wake the workers of these queues once the current transaction commits (at once in autocommit).

    Nothing is sent when the transaction rolls back, or when wake-ups are not configured.
    """
    if not enabled():
        return
    channels = sorted({channel(name) for name in queue_names})
    if channels:
        transaction.on_commit(lambda: publisher().publish(channels))


def queue_saved(sender: type, instance: object, **kwargs: object) -> None:
    """Wake a saved queue's workers: it may have been resumed, or its max_concurrency raised.

    A receiver of QueueConfig's post_save (the admin and `services.queue_update` save queues).
    """
    if enabled() and not getattr(instance, "is_paused", True):
        notify([instance.name])  # type: ignore[attr-defined]


class Publisher:
    """Publishes wake-ups; after a failure it stays quiet for PUBLISH_RETRY_SECONDS."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = _client(url)
        self._retry_at = 0.0
        self._down = False

    def publish(self, channels: Sequence[str]) -> bool:
        """Send one wake-up on each channel; return False when Redis could not be reached."""
        if time.monotonic() < self._retry_at:
            metrics.WAKEUPS.labels(outcome="skipped").inc(len(channels))
            return False
        try:
            if len(channels) == 1:
                self._client.publish(channels[0], b"")
            else:
                pipe = self._client.pipeline(transaction=False)
                for name in channels:
                    pipe.publish(name, b"")
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._retry_at = time.monotonic() + PUBLISH_RETRY_SECONDS
            metrics.WAKEUPS.labels(outcome="failed").inc(len(channels))
            if not self._down:
                self._down = True
                logger.warning(
                    "wake-ups: Redis at %s is unavailable (%s); workers find new tasks by polling until it is back",
                    safe_url(self.url),
                    exc,
                )
            return False
        metrics.WAKEUPS.labels(outcome="sent").inc(len(channels))
        if self._down:
            self._down = False
            logger.info("wake-ups: Redis at %s answers again", safe_url(self.url))
        return True

    def close(self) -> None:
        self._client.close()


_publisher: Publisher | None = None
_publisher_lock = threading.Lock()


def publisher() -> Publisher:
    """Return this process's publisher (one per URL: a changed setting gets a new one)."""
    global _publisher
    url = settings.TASKHUB_WAKEUP_URL
    with _publisher_lock:
        if _publisher is None or _publisher.url != url:
            _publisher = Publisher(url)
        return _publisher


# --- Listening (the worker's side) -----------------------------------------------------------


class Listener:
    """A thread subscribed to the wake-up channels of some queues (all: empty `queues`).

    Its `fileno()` turns readable when a wake-up arrives, so a worker waits on it with its
    other pipes; `take()` then returns the queues woken. `live` is True while subscribed: the
    worker may then poll slowly. When Redis goes away the thread logs a warning once, wakes the
    worker (which polls meanwhile) and reconnects with a back-off; once subscribed again it
    wakes the worker, which claims whatever arrived meanwhile.
    """

    def __init__(self, url: str, queues: Sequence[str]) -> None:
        self.url = url
        prefix = channel_prefix()
        self._channels = [prefix, *(channel(name) for name in queues)]
        self._patterns = [] if queues else [f"{prefix}:*"]
        self._prefix_length = len(prefix) + 1
        self._client = _client(url, health_check_interval=HEALTH_CHECK_SECONDS)
        self._read, self._write = socket.socketpair()
        for end in (self._read, self._write):
            end.setblocking(False)
        self._woken: set[str | None] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taskhub-wakeups", daemon=True)
        self.live = False
        self._warned = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (within LISTEN_READ_SECONDS) and close everything."""
        self._stopping.set()
        self._thread.join(LISTEN_READ_SECONDS + 2 * SOCKET_TIMEOUT_SECONDS + 1)
        self._client.close()
        for end in (self._read, self._write):
            end.close()

    def fileno(self) -> int:
        return self._read.fileno()

    def take(self) -> set[str | None]:
        """Return the queues woken since the last call (None in it: any queue may have work)."""
        try:
            while self._read.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        with self._lock:
            woken, self._woken = self._woken, set()
        return woken

    def _wake(self, queue_name: str | None) -> None:
        with self._lock:
            self._woken.add(queue_name)
        try:
            self._write.send(b"w")
        except (BlockingIOError, OSError):
            pass  # the socket is full of unread wake-ups already

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            pubsub = self._client.pubsub()
            try:
                self._listen(pubsub)
            except (redis.RedisError, OSError) as exc:
                if self._stopping.is_set():
                    return
                self._went_down(exc)
                delay = LISTEN_RETRY_DELAYS[min(failures, len(LISTEN_RETRY_DELAYS) - 1)]
                failures += 1
                self._stopping.wait(delay)
            else:
                failures = 0
            finally:
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    pass

    def _listen(self, pubsub: redis.client.PubSub) -> None:
        pubsub.subscribe(*self._channels)
        if self._patterns:
            pubsub.psubscribe(*self._patterns)
        expected = len(self._channels) + len(self._patterns)
        confirmed = 0
        while not self._stopping.is_set():
            message = pubsub.get_message(timeout=LISTEN_READ_SECONDS)
            if message is None:
                continue
            kind = message["type"]
            if kind in ("subscribe", "psubscribe"):
                confirmed += 1
                if confirmed == expected:
                    self._came_up()
            elif kind in ("message", "pmessage"):
                name = message["channel"]
                name = name.decode() if isinstance(name, bytes) else name
                self._wake(name[self._prefix_length :] or None)

    def _came_up(self) -> None:
        self.live = True
        if self._warned:
            self._warned = False
            logger.info("wake-ups: subscribed again at %s", safe_url(self.url))
        else:
            logger.info("wake-ups: subscribed at %s", safe_url(self.url))
        self._wake(ANY_QUEUE)  # whatever arrived while not subscribed

    def _went_down(self, exc: BaseException) -> None:
        was_live, self.live = self.live, False
        metrics.WAKEUPS.labels(outcome="listen_failed").inc()
        if not self._warned:
            self._warned = True
            logger.warning(
                "wake-ups: Redis at %s is unavailable (%s); polling for new tasks until it is back",
                safe_url(self.url),
                exc,
            )
        if was_live:
            self._wake(ANY_QUEUE)  # the worker switches back to its adaptive polling at once
