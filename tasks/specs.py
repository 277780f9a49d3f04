"""What a caller asks to enqueue, and the rules it must meet before anything is written."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _

from tasks import registry
from tasks.errors import PayloadTooLarge, TaskSpecInvalid
from tasks.models import (
    CONCURRENCY_KEY_MAX_LENGTH,
    DEFAULT_QUEUE_NAME,
    MAX_ATTEMPTS_LIMIT,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TASK_TIMEOUT_MAX_SECONDS,
    TASK_TYPE_MAX_LENGTH,
    UNIQUE_KEY_MAX_LENGTH,
    QueueConfig,
    TaskKind,
)

IDEMPOTENCY_KEY_MAX_LENGTH = 128
# What an enqueue with a `unique_key` does when an active task of the owner's holds the key in that queue.
ON_CONFLICT_RETURN = "return"  # answer with the existing task
ON_CONFLICT_REPLACE = "replace"  # debounce: update it while pending; enqueue anew once it runs
ON_CONFLICT_CHOICES = (ON_CONFLICT_RETURN, ON_CONFLICT_REPLACE)
# MariaDB's JSON_VALID (the CHECK on every JSON column) refuses documents nested 32 levels deep.
PAYLOAD_MAX_DEPTH = 31
# Both bounds fit every backend's DATETIME (MySQL: years 1000-9999) with room for time zones.
RUN_AT_MIN = datetime(1970, 1, 1, tzinfo=UTC)
RUN_AT_MAX = datetime(9999, 12, 30, tzinfo=UTC)


@dataclass(frozen=True)
class TaskSpec:
    """One task to enqueue, as a caller describes it."""

    task_type: str
    payload: dict[str, Any] = field(default_factory=dict)
    queue: str = DEFAULT_QUEUE_NAME
    priority: int = 0
    run_at: datetime | None = None
    max_attempts: int | None = None
    idempotency_key: str | None = None
    # A Django task (`tasks.backends`): `task_type` is its dotted path, checked by the backend
    # (the REST API never builds one of these: it names registry handlers only).
    kind: str = TaskKind.HANDLER
    timeout_seconds: int | None = None  # None: the queue's task timeout
    unique_key: str | None = None
    on_conflict: str = ON_CONFLICT_RETURN
    # At most the queue's `per_key_concurrency` tasks with this key run at once.
    concurrency_key: str | None = None
    schedule_id: int | None = None  # set by `tasks.schedules` only, never from a request


def payload_size(payload: Any) -> int:
    """Return the size in bytes of `payload` as compact UTF-8 JSON; ValueError for NaN or an infinity.

    Python's `float("inf")` (what `1e400` becomes) is not JSON: MySQL's JSON check refuses it, and
    it must be refused here, at validation, not by the INSERT.
    """
    return len(json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8"))


def nests_deeper_than(value: Any, limit: int) -> bool:
    """Return True if `value` nests lists/objects more than `limit` levels (`{}` is one level)."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


def check_spec(spec: TaskSpec, queues: dict[str, QueueConfig], *, index: int | None = None) -> TaskSpec:
    """Return `spec` with its run_at made aware, or raise TaskSpecInvalid / PayloadTooLarge."""
    errors: dict[str, str] = {}
    if spec.kind == TaskKind.DJANGO:
        if not isinstance(spec.task_type, str) or not 1 <= len(spec.task_type) <= TASK_TYPE_MAX_LENGTH:
            errors["task_type"] = _("A Django task's dotted path of 1 to %(max)d characters.") % {
                "max": TASK_TYPE_MAX_LENGTH
            }
    elif (
        spec.kind != TaskKind.HANDLER
        or not isinstance(spec.task_type, str)
        or not registry.is_registered(spec.task_type)
    ):
        errors["task_type"] = _("Unknown task type %(type)s. Registered types: %(types)s.") % {
            "type": repr(spec.task_type),
            "types": ", ".join(registry.registered_types()),
        }
    if not isinstance(spec.queue, str) or spec.queue not in queues:
        errors["queue"] = _("Unknown queue %(name)s.") % {"name": repr(spec.queue)}
    if not _is_int(spec.priority) or not PRIORITY_MIN <= spec.priority <= PRIORITY_MAX:
        errors["priority"] = _("Must be an integer from %(min)d to %(max)d.") % {
            "min": PRIORITY_MIN,
            "max": PRIORITY_MAX,
        }
    if spec.max_attempts is not None and (
        not _is_int(spec.max_attempts) or not 1 <= spec.max_attempts <= MAX_ATTEMPTS_LIMIT
    ):
        errors["max_attempts"] = _("Must be an integer from %(min)d to %(max)d.") % {
            "min": 1,
            "max": MAX_ATTEMPTS_LIMIT,
        }
    if spec.timeout_seconds is not None and (
        not _is_int(spec.timeout_seconds) or not 1 <= spec.timeout_seconds <= TASK_TIMEOUT_MAX_SECONDS
    ):
        errors["timeout_seconds"] = _("Must be an integer from %(min)d to %(max)d.") % {
            "min": 1,
            "max": TASK_TIMEOUT_MAX_SECONDS,
        }
    key = spec.idempotency_key
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH):
        errors["idempotency_key"] = _("Must be a string of 1 to %(max)d characters.") % {
            "max": IDEMPOTENCY_KEY_MAX_LENGTH
        }
    unique_key = spec.unique_key
    if unique_key is not None and (
        not isinstance(unique_key, str) or not 1 <= len(unique_key) <= UNIQUE_KEY_MAX_LENGTH
    ):
        errors["unique_key"] = _("Must be a string of 1 to %(max)d characters.") % {"max": UNIQUE_KEY_MAX_LENGTH}
    concurrency_key = spec.concurrency_key
    if concurrency_key is not None and (
        not isinstance(concurrency_key, str) or not 1 <= len(concurrency_key) <= CONCURRENCY_KEY_MAX_LENGTH
    ):
        errors["concurrency_key"] = _("Must be a string of 1 to %(max)d characters.") % {
            "max": CONCURRENCY_KEY_MAX_LENGTH
        }
    if spec.on_conflict not in ON_CONFLICT_CHOICES:
        errors["on_conflict"] = _("Must be one of: %(choices)s.") % {"choices": ", ".join(ON_CONFLICT_CHOICES)}
    run_at = _aware(spec.run_at)
    if spec.run_at is not None and (run_at is None or not RUN_AT_MIN <= run_at <= RUN_AT_MAX):
        errors["run_at"] = _("Must be a datetime between %(min)s and %(max)s.") % {
            "min": f"{RUN_AT_MIN:%Y-%m-%d}",
            "max": f"{RUN_AT_MAX:%Y-%m-%d}",
        }
    if not isinstance(spec.payload, dict):
        errors["payload"] = _("Must be a JSON object.")
    elif nests_deeper_than(spec.payload, PAYLOAD_MAX_DEPTH):
        errors["payload"] = _("Must not nest deeper than %(depth)d levels.") % {"depth": PAYLOAD_MAX_DEPTH}
    else:
        try:
            size = payload_size(spec.payload)
        except UnicodeEncodeError:
            errors["payload"] = _("Must be valid Unicode text (no unpaired surrogates).")
        except (TypeError, ValueError):
            errors["payload"] = _("Must contain only JSON values (finite numbers: no NaN or Infinity).")
    if errors:
        raise TaskSpecInvalid(errors, index=index)
    limit = settings.TASK_PAYLOAD_MAX_BYTES
    if size > limit:
        raise PayloadTooLarge(size, limit, index=index)
    if run_at is spec.run_at:
        return spec
    return TaskSpec(**{**spec.__dict__, "run_at": run_at})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _aware(value: Any) -> datetime | None:
    """Return `value` as an aware datetime; a naive one is read as UTC (never the server's zone)."""
    if not isinstance(value, datetime):
        return None
    if timezone.is_naive(value):
        return value.replace(tzinfo=UTC)
    return value
