"""Bulk actions by filter: retry, cancel, delete, change priority, move — in batches, resumable, audited.

1. `bulk_action_create` validates the filter and the action's parameters and stores a
   `BulkAction` row (state `queued`): the filter, the highest task id at that moment (tasks created
   later are never touched), the user and the time. That row is the audit record too.
2. `bulk_action_run` (the `run_bulk_actions` command, a long-running process beside the workers)
   walks the tasks by keyset on the primary key, BATCH_SIZE at a time. Each batch is one
   transaction: lock the action's row, read the next ids after its cursor from the filter's
   *anchor* index, apply the action to those of them that match the whole filter through one
   batch transition (`tasks.transitions`, rows locked and re-checked there), then move the cursor
   and the counts. A crash rolls back the batch with its cursor: the next run resumes there, and
   no task is changed twice.

A filter must name an anchor with an index that serves "next ids after the cursor" without
reading the table's history: an error group (task_failure_group_idx), an owner
(task_owner_id_idx, with a status task_owner_status_idx), or the live statuses pending/running
(task_claim_idx: the live set). Any other filter is refused with 400 `filter_not_indexed`. The
other fields (queue, type, time range, keys) narrow each batch after its ids are read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, connection, transaction
from django.db.models import Max, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from core.db.errors import with_contention_retry
from tasks import transitions
from tasks.models import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    BulkAction,
    BulkActionKind,
    BulkActionState,
    FailureGroup,
    QueueConfig,
    TaskQueue,
    TaskStatus,
)

logger = logging.getLogger("tasks.bulk")

BATCH_SIZE = 1000
# run_bulk_actions sleeps this many times as long as each batch took: the workers keep the database
# the rest of the time (bench: the console section measures the drain beside a bulk retry).
SLEEP_COEF = 1.0
LIVE_STATUSES = (TaskStatus.PENDING, TaskStatus.RUNNING)
FILTER_FIELDS = (
    "queue",
    "status",
    "task_type",
    "owner",
    "created_after",
    "created_before",
    "failure_group",
    "unique_key",
    "concurrency_key",
)
# The actions a filter can drive (`drain` is recorded in the same audit list, for a worker, never run here).
BY_FILTER = tuple(kind for kind in BulkActionKind if kind != BulkActionKind.DRAIN)
# The live-set anchor on MySQL/MariaDB: the claim index's (status) prefix, read to the end of the
# live set and sorted by id (O(live set)); never the primary key from the cursor on (O(history)).
LIVE_IDS_SQL_MYSQL = (
    "SELECT id FROM task_queue FORCE INDEX (task_claim_idx) "
    "WHERE status = %s AND id > %s AND id <= %s ORDER BY id LIMIT %s"
)


class BulkActionInvalid(ValueError):
    """A bulk action's filter or parameters cannot be used: 400 with a stable code."""

    def __init__(self, detail: str, code: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code
        self.field = field


@dataclass(frozen=True)
class Validated:
    filters: dict[str, Any]  # JSON-ready: stored on the action
    params: dict[str, Any]


def validate(action: str, raw_filters: dict[str, str], raw_params: dict[str, str]) -> Validated:
    """Check an action, its filter and parameters; raise BulkActionInvalid (400 + code) on bad input."""
    if action not in BY_FILTER:
        raise BulkActionInvalid(
            _("Unknown action %(action)r; use one of: %(choices)s.")
            % {"action": action, "choices": ", ".join(BY_FILTER)},
            "invalid_action",
            "action",
        )
    return Validated(validate_filters(raw_filters), _params(action, raw_params))


def validate_filters(raw_filters: dict[str, str]) -> dict[str, Any]:
    """Check a filter (bulk actions and the console's task search); raise BulkActionInvalid (400 + code)."""
    unknown = sorted(set(raw_filters) - set(FILTER_FIELDS))
    if unknown:
        raise BulkActionInvalid(
            _("Unknown filter field(s): %(fields)s.") % {"fields": ", ".join(unknown)}, "unknown_filter", unknown[0]
        )
    filters: dict[str, Any] = {}
    for name in FILTER_FIELDS:
        value = (raw_filters.get(name) or "").strip()
        if value:
            filters[name] = _filter_value(name, value)
    if not any(name in filters for name in ("failure_group", "owner")) and filters.get("status") not in LIVE_STATUSES:
        raise BulkActionInvalid(
            _(
                "No index serves this filter without reading the whole history: name an error group, an owner, "
                "or the status pending or running (queue, type, time range and keys then narrow it)."
            ),
            "filter_not_indexed",
        )
    return filters


def _filter_value(name: str, value: str) -> Any:
    if name == "status":
        if value not in TaskStatus.values:
            raise BulkActionInvalid(_("Unknown status %(value)r.") % {"value": value}, "invalid_filter", name)
        return value
    if name == "queue":
        queue_id = QueueConfig.objects.filter(name=value).values_list("pk", flat=True).first()
        if queue_id is None:
            raise BulkActionInvalid(_("No queue named %(value)r.") % {"value": value}, "unknown_queue", name)
        return value
    if name == "owner":
        if not get_user_model().objects.filter(username=value).exists():
            raise BulkActionInvalid(_("No user named %(value)r.") % {"value": value}, "unknown_owner", name)
        return value
    if name == "failure_group":
        if not FailureGroup.objects.filter(pk=value).exists():
            raise BulkActionInvalid(_("No error group %(value)r.") % {"value": value}, "unknown_failure_group", name)
        return value
    if name in ("created_after", "created_before"):
        moment = _parse_moment(value)
        if moment is None:
            raise BulkActionInvalid(
                _("%(field)s must be an ISO 8601 date-time.") % {"field": name}, "invalid_filter", name
            )
        return moment.isoformat()
    if len(value) > 255:
        raise BulkActionInvalid(_("%(field)s is too long.") % {"field": name}, "invalid_filter", name)
    return value


def _parse_moment(value: str) -> datetime | None:
    try:
        moment = parse_datetime(value)
    except ValueError:
        return None
    if moment is not None and timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_current_timezone())
    return moment


def _params(action: str, raw: dict[str, str]) -> dict[str, Any]:
    if action == BulkActionKind.PRIORITY:
        try:
            priority = int((raw.get("priority") or "").strip())
        except ValueError:
            priority = None
        if priority is None or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise BulkActionInvalid(
                _("priority must be a whole number from %(min)s to %(max)s.")
                % {"min": PRIORITY_MIN, "max": PRIORITY_MAX},
                "invalid_priority",
                "priority",
            )
        return {"priority": priority}
    if action == BulkActionKind.MOVE:
        name = (raw.get("target_queue") or "").strip()
        queue_id = QueueConfig.objects.filter(name=name).values_list("pk", flat=True).first()
        if queue_id is None:
            raise BulkActionInvalid(
                _("target_queue must name an existing queue."), "unknown_target_queue", "target_queue"
            )
        return {"target_queue": name}
    return {}


def bulk_action_create(
    *, action: str, filters: dict[str, str], params: dict[str, str], by: AbstractBaseUser
) -> BulkAction:
    """Validate and record a bulk action (state queued); the runner carries it out."""
    checked = validate(action, filters, params)
    last_id = TaskQueue.objects.aggregate(last=Max("id"))["last"] or 0  # the primary key's end: one index read
    bulk = BulkAction.objects.create(
        action=action, filters=checked.filters, params=checked.params, last_id=last_id, created_by=by
    )
    logger.info(
        "bulk action #%s %s by %s, filter %s %s, up to task #%s",
        bulk.pk,
        action,
        by.get_username(),
        checked.filters,
        checked.params,
        last_id,
    )
    return bulk


# --- The runner ------------------------------------------------------------------------------


def _anchor_ids(filters: dict[str, Any], after: int, up_to: int, limit: int) -> list[int]:
    """Return the next `limit` task ids after `after` (up to `up_to`) from the filter's anchor index."""
    rows = TaskQueue.objects.filter(pk__gt=after, pk__lte=up_to)
    if "failure_group" in filters:
        rows = rows.filter(failure_group_id=filters["failure_group"])
    elif "owner" in filters:
        rows = rows.filter(owner_id=_owner_id(filters["owner"]))
        if "status" in filters:
            rows = rows.filter(status=filters["status"])
    else:
        status = filters["status"]
        if connection.vendor == "mysql":
            with connection.cursor() as cursor:
                cursor.execute(LIVE_IDS_SQL_MYSQL, [status, after, up_to, limit])
                return [row[0] for row in cursor.fetchall()]
        rows = rows.filter(status=status)
    return list(rows.order_by("pk").values_list("pk", flat=True)[:limit])


def anchor_index(filters: dict[str, Any]) -> tuple[str, list[tuple[str, Any]]]:
    """Return the filter's anchor index and the equalities on its leading columns (a validated filter)."""
    if "failure_group" in filters:
        return "task_failure_group_idx", [("failure_group_id", filters["failure_group"])]
    if "owner" in filters:
        owner = ("owner_id", _owner_id(filters["owner"]))
        if "status" in filters:
            return "task_owner_status_idx", [owner, ("status", filters["status"])]
        return "task_owner_id_idx", [owner]
    return "task_claim_idx", [("status", filters["status"])]


def anchor_ids_before(filters: dict[str, Any], before: int | None, limit: int) -> list[int]:
    """Return up to `limit` task ids below `before` (all when None), newest first, from the filter's anchor index.

    On MySQL/MariaDB the index is named (FORCE INDEX): with few rows of a status the planner may
    prefer a (status, ...) index and sort, which reads every task of that status in history.
    """
    before = before or 2**63 - 1
    index, equalities = anchor_index(filters)
    if connection.vendor == "mysql":
        where = " AND ".join(f"{column} = %s" for column, _value in equalities)
        sql = f"SELECT id FROM task_queue FORCE INDEX ({index}) WHERE {where} AND id < %s ORDER BY id DESC LIMIT %s"
        with connection.cursor() as cursor:
            cursor.execute(sql, [value for _column, value in equalities] + [before, limit])
            return [row[0] for row in cursor.fetchall()]
    rows = TaskQueue.objects.filter(pk__lt=before, **dict(equalities))
    return list(rows.order_by("-pk").values_list("pk", flat=True)[:limit])


def _owner_id(username: str) -> int | None:
    return get_user_model().objects.filter(username=username).values_list("pk", flat=True).first()


def matching(filters: dict[str, Any]) -> QuerySet[TaskQueue]:
    """Return the tasks the whole filter selects (used on one batch's ids at a time)."""
    # Names are resolved to ids first: the batch's locking read must read task_queue alone.
    rows = TaskQueue.objects.all()
    if "queue" in filters:
        rows = rows.filter(
            queue_id=QueueConfig.objects.filter(name=filters["queue"]).values_list("pk", flat=True).first()
        )
    if "status" in filters:
        rows = rows.filter(status=filters["status"])
    if "task_type" in filters:
        rows = rows.filter(task_type=filters["task_type"])
    if "owner" in filters:
        rows = rows.filter(owner_id=_owner_id(filters["owner"]))
    if "created_after" in filters:
        rows = rows.filter(created_at__gte=datetime.fromisoformat(filters["created_after"]))
    if "created_before" in filters:
        rows = rows.filter(created_at__lt=datetime.fromisoformat(filters["created_before"]))
    if "failure_group" in filters:
        rows = rows.filter(failure_group_id=filters["failure_group"])
    if "unique_key" in filters:
        rows = rows.filter(unique_key=filters["unique_key"])
    if "concurrency_key" in filters:
        rows = rows.filter(concurrency_key=filters["concurrency_key"])
    return rows


def _apply(bulk: BulkAction, batch: QuerySet[TaskQueue]) -> int:
    action = bulk.action
    if action == BulkActionKind.RETRY:
        return transitions.reopen_many(batch)
    if action == BulkActionKind.CANCEL:
        return transitions.cancel_many(batch)
    if action == BulkActionKind.DELETE:
        return transitions.delete_many(batch)
    if action == BulkActionKind.PRIORITY:
        return transitions.set_priority_many(batch, bulk.params["priority"])
    if action == BulkActionKind.MOVE:
        return transitions.move_many(batch, QueueConfig.objects.get(name=bulk.params["target_queue"]))
    raise ValueError(f"unknown bulk action {action!r}")


def _batch(action_id: int, batch_size: int) -> bool | None:
    """Run one batch of an action in one transaction; return True when it is finished, None when busy."""
    with transaction.atomic():
        bulk = BulkAction.objects.select_for_update(skip_locked=True).filter(pk=action_id).first()
        if bulk is None:
            return None  # another runner holds it for its batch right now
        if bulk.state in (BulkActionState.DONE, BulkActionState.FAILED):
            return True
        ids = _anchor_ids(bulk.filters, bulk.cursor, bulk.last_id, batch_size)
        changed = _apply(bulk, matching(bulk.filters).filter(pk__in=ids)) if ids else 0
        now = timezone.now()
        finished = len(ids) < batch_size
        BulkAction.objects.filter(pk=bulk.pk).update(
            cursor=ids[-1] if ids else bulk.cursor,
            scanned=bulk.scanned + len(ids),
            changed=bulk.changed + changed,
            batches=bulk.batches + 1,
            state=BulkActionState.DONE if finished else BulkActionState.RUNNING,
            updated_at=now,
            finished_at=now if finished else None,
        )
    if finished:
        logger.info("bulk action #%s %s done: %s task(s) changed", action_id, bulk.action, bulk.changed + changed)
    return finished


def bulk_action_run(
    action_id: int, *, batch_size: int = BATCH_SIZE, max_batches: int | None = None, sleep_coef: float = 0.0
) -> BulkAction:
    """Carry an action on from its cursor until it is done (or `max_batches` ran, or another runner holds it).

    After each batch it sleeps `sleep_coef` times as long as the batch took (pt-archiver's
    `--sleep-coef`): with 1.0 the action holds a connection at most half of the time and the
    database's cores stay with the workers the other half.
    """
    ran = 0
    while max_batches is None or ran < max_batches:
        started = time.monotonic()
        try:
            finished = with_contention_retry(lambda: _batch(action_id, batch_size), what="bulk action batch")
        except DatabaseError:
            raise  # the database is away or refused: the action stays as it was, resumable from its cursor
        except Exception as exc:
            BulkAction.objects.filter(pk=action_id).update(
                state=BulkActionState.FAILED,
                error=str(exc)[:2000],
                updated_at=timezone.now(),
                finished_at=timezone.now(),
            )
            logger.exception("bulk action #%s failed", action_id)
            raise
        ran += 1
        if finished is None or finished:
            break
        if sleep_coef > 0:
            time.sleep((time.monotonic() - started) * sleep_coef)
    return BulkAction.objects.get(pk=action_id)


def bulk_actions_run_pending(*, batch_size: int = BATCH_SIZE, sleep_coef: float = 0.0) -> int:
    """Carry on every queued or running action, oldest first; return how many were looked at."""
    pending = list(
        BulkAction.objects.filter(state__in=(BulkActionState.QUEUED, BulkActionState.RUNNING))
        .order_by("id")
        .values_list("pk", flat=True)
    )
    for action_id in pending:
        try:
            bulk_action_run(action_id, batch_size=batch_size, sleep_coef=sleep_coef)
        except Exception:  # recorded on the action; the others still run
            continue
    return len(pending)
