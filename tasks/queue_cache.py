"""The queues enqueueing reads, kept per process for a moment: no round trip per task to find its queue.

Enqueue is the hottest write, and it reads only a queue's id, name, default `max_attempts` and
`max_active_per_user`. Entries live QUEUE_CACHE_SECONDS: a change made by another process is
seen within that (the same bound as a worker's view of a paused queue); a change made in this
process (admin, REST, services) forgets them at once. A name not found is never cached, so a
queue created anywhere is usable at once; a queue deleted meanwhile makes the INSERT fail its
foreign key, and the enqueue service then forgets the cache and looks again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from tasks.models import QueueConfig

QUEUE_CACHE_SECONDS = 1.0

_entries: dict[str, tuple[float, QueueConfig]] = {}


def queues_named(names: Iterable[str], load: Callable[[set[str]], dict[str, QueueConfig]]) -> dict[str, QueueConfig]:
    """Return the queues with these names that exist, reading only those not cached (with `load`)."""
    now = time.monotonic()
    found: dict[str, QueueConfig] = {}
    missing: set[str] = set()
    for name in names:
        entry = _entries.get(name)
        if entry is not None and now < entry[0]:
            found[name] = entry[1]
        else:
            missing.add(name)
    if missing:
        loaded = load(missing)
        expires = now + QUEUE_CACHE_SECONDS
        for name, queue in loaded.items():
            _entries[name] = (expires, queue)
        found.update(loaded)
    return found


def name_of(queue_id: int) -> str | None:
    """Return the name of a queue this process has read lately, or None (never a query)."""
    for _expires, queue in list(_entries.values()):
        if queue.pk == queue_id:
            return queue.name
    return None


def forget(*args: Any, **kwargs: Any) -> None:
    """Drop every entry (also a receiver of QueueConfig's post_save and post_delete)."""
    _entries.clear()
