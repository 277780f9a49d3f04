"""The claim's plan for a queue with fairness, per-key concurrency or a rate limit: which tasks to lock.

A plain queue is claimed by one locking read in claim order (`transitions._lock_claimable`).
Any of these settings needs a choice the ORDER BY alone cannot make, so the claim goes in three
steps, all in the claim's transaction (`transitions._claim`):

1. `plan`: a non-locking read of candidates, on an index that matches its ORDER BY —
   - `fairness=owner`: the next owners with pending tasks after the last one whose turn this
     process gave (bounded reads of task_fair_idx's entries, looking READ_AHEAD batches ahead,
     with the owners' weights), at most OWNERS_PER_BATCH of them, then each one's best few (one
     index range per owner, in one UNION ALL), interleaved: every owner's first `weight`, then
     every owner's next `weight`, ...;
   - otherwise: the queue's best few in claim order (task_claim_idx);
   then the choice in Python: at most `per_key_concurrency` running per key (counting the ones
   running now) and no more starts than the rate limit's token bucket holds.
2. `transitions` locks the chosen ids by primary key, FOR UPDATE SKIP LOCKED: a task another
   worker took meanwhile is passed over, never waited for, and re-checked pending and due. A fair
   queue with no limit skips this step: its UNION ALL locked as it read (`Plan.locked`).
3. `settle`: the tokens of the tasks actually taken are spent, and the round-robin moves on.

Per-key counts and the token buckets are decided under the queue's row lock, which
`transitions._budgets` takes (SKIP LOCKED) for every queue with either setting: two workers
never both see the same free slot or the same token ("no leaders": a row lock in the same
transaction as the effect). A fair queue without limits takes no queue lock; its workers meet
only on task rows, which SKIP LOCKED shares out.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection
from django.db.models import Count, F

from tasks import limits
from tasks.models import Fairness, OwnerQueueSettings, QueueConfig, QueueRateBucket, TaskQueue, TaskStatus

# Candidates read per task wanted when per-key limits may turn some down.
CANDIDATES_PER_SLOT = 3
# Keys at their limit left out by the candidate read itself (beyond that, only by the choice).
EXCLUDED_KEYS_MAX = 200
# Index entries one read of the owners with pending tasks looks at (`_owners_after`).
OWNER_SCAN_ROWS = 4000
# Candidate reads per claim of one queue, when one falls short.
PLAN_ROUNDS = 3
SHARED_BUCKET = ""

# The lowest and highest owners with pending tasks: two dives into task_fair_idx (no row read).
START_SQL = "SELECT MIN(owner_id), MAX(owner_id) FROM task_queue WHERE status = 'pending' AND queue_id = %s"
# The most owners one fair claim batch takes tasks from (several each when the batch is bigger):
# the locking read has at most this many UNION ALL branches, and the batch's counters as many
# rows per table, so two workers seldom meet on the same counter rows. With N owners with
# runnable tasks, each one gets a turn within ceil(N / OWNERS_PER_BATCH) of a worker's batches.
OWNERS_PER_BATCH = 8
# Claims' worth of owners one read of the owners looks ahead (`_FairReader`): that read runs once
# per READ_AHEAD claims instead of every claim; an owner new since it waits at most that many more.
READ_AHEAD = 4
# queue id -> the owner this process served last: the next fair claim starts after it.
_cursor: dict[int, int] = {}
# queue id -> the owners read ahead, in round-robin order from the one after some earlier cursor.
_ahead: dict[int, list[int]] = {}
# queue id -> the weights above 1 of the owners read ahead (`OwnerQueueSettings`), read with them.
_weights: dict[int, dict[int, int]] = {}


@dataclass(frozen=True)
class Candidate:
    pk: int
    owner_id: int
    key: str | None
    priority: int
    run_at: object  # as the database returns it: compared only with its own kind
    task: TaskQueue | None = None  # the row itself, when the read locked it (`Plan.locked`)


@dataclass
class Bucket:
    key: str
    tokens: float
    refilled_at: datetime
    stored: bool  # a row exists
    spent: int = 0
    throttled: bool = False


@dataclass
class Plan:
    queue: QueueConfig
    ids: list[int] = field(default_factory=list)
    candidates: dict[int, Candidate] = field(default_factory=dict)
    # Runnable tasks were left for a limit: nothing claimed does not mean nothing runnable.
    held_back: bool = False
    # When the rate limit's bucket will next hold a token (seconds), if it held some back.
    retry_in: float | None = None
    rate: limits.Rate | None = None
    buckets: dict[str, Bucket] = field(default_factory=dict)
    # True when the candidate read itself locked the rows (FOR UPDATE SKIP LOCKED): no choice was left.
    locked: bool = False
    # fairness=owner: the owners whose turn this batch is, in round-robin order.
    turn: list[int] = field(default_factory=list)

    def locked_tasks(self) -> list[TaskQueue]:
        """Return the chosen tasks the candidate read locked, in the plan's order."""
        return [task for pk in self.ids if (task := self.candidates[pk].task) is not None]


def is_plain(queue: QueueConfig) -> bool:
    """Return True when the queue is claimed in plain claim order, with no plan."""
    return queue.fairness != Fairness.OWNER and not queue.per_key_concurrency and not queue.rate_limit


def plan(queue: QueueConfig, now: datetime, budget: int, *, lock_columns: Sequence[str] = ()) -> Plan:
    """Choose up to `budget` of the queue's runnable tasks, in the order they should be taken.

    A fair queue with no limit has no choice to make after its read: given `lock_columns`, its
    candidate read locks the rows (FOR UPDATE SKIP LOCKED, each owner's index range in claim
    order) and returns them with those columns, one round trip instead of a read then a lock.
    A read can fall short (a key reaching its limit within this batch, an owner with more
    tasks than its share): then it reads again, leaving out the keys now at their limit, up to
    PLAN_ROUNDS times.
    """
    result = Plan(queue=queue)
    try:
        result.rate = limits.parse_rate(queue.rate_limit)
    except ValueError:
        result.rate = None  # refused by every form and the API; never stored by them
    limit = queue.per_key_concurrency
    room: dict[str, int] = {}
    if limit:
        room = {key: limit - n for key, n in running_per_key(queue.pk).items()}
        result.held_back = any(n <= 0 for n in room.values())
    wanted = budget * CANDIDATES_PER_SLOT if limit or queue.rate_limit_per_key else budget
    fair = queue.fairness == Fairness.OWNER
    result.locked = bool(lock_columns) and fair and not limit and result.rate is None and not queue.rate_limit
    reader = (
        _FairReader(queue.pk, now, budget, lock_columns if result.locked else ())
        if fair
        else _OrderedReader(queue.pk, now)
    )
    if isinstance(reader, _FairReader):
        result.turn = list(reader.owners)
    seen: set[int] = set()
    for _ in range(PLAN_ROUNDS):
        full = sorted(key for key, n in room.items() if n <= 0)
        candidates, more = reader.read(wanted + len(result.ids), full if len(full) <= EXCLUDED_KEYS_MAX else [])
        fresh = [c for c in candidates if c.pk not in seen]
        seen.update(c.pk for c in fresh)
        if result.rate is not None:
            _load_buckets(result, {_bucket_key(queue, c.key) for c in fresh}, now)
        refused = False
        for candidate in fresh:
            if len(result.ids) >= budget:
                break
            folded = fold_key(candidate.key) if limit and candidate.key is not None else None
            if folded is not None and room.get(folded, limit) <= 0:
                result.held_back = refused = True
                continue
            if result.rate is not None and not _take_token(result, candidate):
                continue
            if folded is not None:
                room[folded] = room.get(folded, limit) - 1
            result.candidates[candidate.pk] = candidate
            result.ids.append(candidate.pk)
        dry = result.retry_in is not None and not queue.rate_limit_per_key  # the one bucket is empty
        if len(result.ids) >= budget or dry or not more or not (refused or reader.short):
            break
    return result


def _take_token(plan: Plan, candidate: Candidate) -> bool:
    """Spend one token of the candidate's bucket; False (and the wait noted) when it has none."""
    assert plan.rate is not None
    bucket = plan.buckets[_bucket_key(plan.queue, candidate.key)]
    if bucket.tokens - bucket.spent < 1:
        bucket.throttled = plan.held_back = True
        wait = limits.seconds_to_next_token(bucket.tokens - bucket.spent, plan.rate)
        plan.retry_in = wait if plan.retry_in is None else min(plan.retry_in, wait)
        return False
    bucket.spent += 1
    return True


def settle(plan: Plan, taken: Collection[int], now: datetime) -> None:
    """Spend the tokens of the tasks actually taken and move the round-robin past their owners."""
    if plan.queue.fairness == Fairness.OWNER:
        # The last owner of the batch's turn that got a task, in the round-robin's order (not the
        # last task's owner: a share cut by the batch's end still counts as that owner's turn).
        served = {plan.candidates[pk].owner_id for pk in plan.ids if pk in taken}
        last = [owner for owner in plan.turn if owner in served]
        if last:
            _cursor[plan.queue.pk] = last[-1]
    if plan.rate is None:
        return
    spent: dict[str, int] = {}
    for pk in taken:
        if pk in plan.candidates:
            key = _bucket_key(plan.queue, plan.candidates[pk].key)
            spent[key] = spent.get(key, 0) + 1
    for key, bucket in plan.buckets.items():
        used = spent.get(key, 0)
        if not used and not bucket.throttled:
            continue
        tokens = max(bucket.tokens - used, 0.0)
        if bucket.stored:
            QueueRateBucket.objects.filter(queue_id=plan.queue.pk, key=key).update(
                tokens=tokens, refilled_at=bucket.refilled_at, throttled=F("throttled") + int(bucket.throttled)
            )
        else:
            QueueRateBucket.objects.create(
                queue_id=plan.queue.pk,
                key=key,
                tokens=tokens,
                refilled_at=bucket.refilled_at,
                throttled=int(bucket.throttled),
            )


def running_per_key(queue_id: int) -> dict[str, int]:
    """Return the queue's running tasks per concurrency key (keys folded as the database compares them).

    Served by the (status, queue_id) prefix of task_claim_idx: running rows are few.
    """
    rows = (
        TaskQueue.objects.filter(status=TaskStatus.RUNNING, queue_id=queue_id, concurrency_key__isnull=False)
        .values_list("concurrency_key")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts: dict[str, int] = {}
    for key, n in rows:
        counts[fold_key(key)] = counts.get(fold_key(key), 0) + n
    return counts


def next_owners(queue_id: int, after: int, n: int) -> list[int]:
    """Return up to `n` owners with pending tasks in the queue, in id order after `after`, wrapping round."""
    owners = _owners_after(queue_id, after, n)
    if len(owners) < n and after > 0:
        owners += [owner for owner in _owners_after(queue_id, 0, n - len(owners)) if owner <= after]
    return owners


# --- The reads ---------------------------------------------------------------------------------


def _hint(index: str) -> str:
    # A small table's statistics would pick a scan plus filesort; the plans are pinned.
    return f"FORCE INDEX ({index})" if connection.vendor == "mysql" else ""


def owners_sql() -> str:
    """The owners among the next OWNER_SCAN_ROWS pending tasks' index entries after one owner, with their counts.

    A bounded read of task_fair_idx in its own order (no row is read, nothing sorted under a lock);
    `_owners_after` starts the next read after the last owner when an owner's backlog fills it.
    """
    return (
        "SELECT owner_id, COUNT(*) FROM (SELECT owner_id FROM task_queue "
        f"{_hint('task_fair_idx')} WHERE status = 'pending' AND queue_id = %s AND owner_id > %s "
        f"ORDER BY owner_id LIMIT %s) AS w GROUP BY owner_id{' ORDER BY NULL' if connection.vendor == 'mysql' else ''}"
    )


def owner_candidates_sql(owners: int, excluded: int, lock_columns: Sequence[str] = ()) -> str:
    """One owner's best runnable tasks per UNION ALL branch, each an index range in ORDER BY order.

    With `lock_columns`, those columns, and on MySQL/MariaDB each branch locks what it returns
    (FOR UPDATE SKIP LOCKED: rows another worker holds are passed over, the owner's next taken).
    """
    columns = ", ".join(lock_columns) if lock_columns else "id, owner_id, concurrency_key, priority, run_at"
    select = (
        f"SELECT {columns} FROM task_queue {_hint('task_fair_idx')} "
        f"WHERE status = 'pending' AND queue_id = %s AND owner_id = %s AND run_at <= %s{_key_filter(excluded)} "
        "ORDER BY priority DESC, run_at, id LIMIT %s"
    )
    if connection.vendor == "mysql":
        # Parenthesized branches: MariaDB runs each as an index range, with no derived table to fill.
        lock = " FOR UPDATE SKIP LOCKED" if lock_columns else ""
        return " UNION ALL ".join([f"({select}{lock})"] * owners)
    # SQLite takes no ORDER BY/LIMIT in a bare UNION branch (and locks nothing row by row).
    return " UNION ALL ".join(f"SELECT * FROM ({select}) AS c{i}" for i in range(owners))


def ordered_candidates_sql(excluded: int) -> str:
    return (
        f"SELECT id, owner_id, concurrency_key, priority, run_at FROM task_queue {_hint('task_claim_idx')} "
        f"WHERE status = 'pending' AND queue_id = %s AND run_at <= %s{_key_filter(excluded)} "
        "ORDER BY priority DESC, run_at, id LIMIT %s"
    )


def _key_filter(excluded: int) -> str:
    if not excluded:
        return ""
    marks = ", ".join(["%s"] * excluded)
    return f" AND (concurrency_key IS NULL OR concurrency_key NOT IN ({marks}))"


def owner_weights(owners: Collection[int]) -> dict[int, int]:
    """Return the fair weights above 1 of these owners (the others have weight 1)."""
    if not owners:
        return {}
    # A plain statement: the ORM's compile of an IN of a hundred ids costs more than the read.
    table = OwnerQueueSettings._meta.db_table
    marks = ", ".join(["%s"] * len(owners))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT user_id, fair_weight FROM {table} WHERE user_id IN ({marks}) AND fair_weight > 1", list(owners)
        )
        return dict(cursor.fetchall())


def _owners_after(queue_id: int, after: int, n: int) -> list[int]:
    """Return up to `n` owners with pending tasks after `after`, reading at most OWNER_SCAN_ROWS entries a time.

    An owner with a backlog bigger than a read costs one read (the next starts after it), never
    its whole backlog: at most `n` reads.
    """
    owners: list[int] = []
    with connection.cursor() as cursor:
        while len(owners) < n:
            cursor.execute(owners_sql(), [queue_id, after, OWNER_SCAN_ROWS])
            rows = sorted(cursor.fetchall())
            owners += [owner for owner, _ in rows[: n - len(owners)]]
            if not rows or sum(count for _, count in rows) < OWNER_SCAN_ROWS:
                break  # the read reached the queue's last pending task
            after = rows[-1][0]
    return owners


def _random_start(queue_id: int) -> int:
    """Return where this process's round-robin starts: at random among the owners' ids (the claim reads after it).

    Workers started together then do not all read (and fight over) the same owners' tasks.
    """
    with connection.cursor() as cursor:
        cursor.execute(START_SQL, [queue_id])
        lowest, highest = cursor.fetchone()
    return random.randint(lowest - 1, highest - 1) if highest else 0


class _OrderedReader:
    """The queue's best runnable tasks in claim order (task_claim_idx)."""

    short = False  # one list: a read cut by its LIMIT is read again only for keys at their limit

    def __init__(self, queue_id: int, now: datetime) -> None:
        self.queue_id, self.due = queue_id, connection.ops.adapt_datetimefield_value(now)

    def read(self, n: int, excluded: list[str]) -> tuple[list[Candidate], bool]:
        with connection.cursor() as cursor:
            cursor.execute(ordered_candidates_sql(len(excluded)), [self.queue_id, self.due, *excluded, n])
            rows = [Candidate(*row) for row in cursor.fetchall()]
        return rows, len(rows) == n


class _FairReader:
    """The next owners' best runnable tasks, interleaved: each owner's first, then each one's second, ..."""

    def __init__(self, queue_id: int, now: datetime, budget: int, lock_columns: Sequence[str] = ()) -> None:
        self.queue_id, self.due = queue_id, connection.ops.adapt_datetimefield_value(now)
        self.lock_columns = lock_columns
        after = _cursor.get(queue_id)
        if after is None:
            after = _cursor[queue_id] = _random_start(queue_id)
            _ahead.pop(queue_id, None)
            _weights.pop(queue_id, None)
        ahead = _ahead.get(queue_id, [])
        ahead = ahead[ahead.index(after) + 1 :] if after in ahead else []
        per_batch = min(budget, OWNERS_PER_BATCH)
        if len(ahead) < per_batch or queue_id not in _weights:
            ahead = next_owners(queue_id, after, per_batch * READ_AHEAD)
            _weights[queue_id] = owner_weights(ahead)
        _ahead[queue_id] = ahead
        self.weights = _weights[queue_id]
        # The next owners (at most OWNERS_PER_BATCH) whose shares (their weights) fill the batch;
        # always at least one.
        self.owners: list[int] = []
        shares = 0
        for owner in ahead:
            if self.owners and (len(self.owners) >= per_batch or shares + self.weight(owner) > budget):
                break
            self.owners.append(owner)
            shares += self.weight(owner)
        self.rounds = 0
        # True when an owner's share was cut by its LIMIT while the batch is not full yet.
        self.short = False

    def weight(self, owner: int) -> int:
        return self.weights.get(owner, 1)

    def read(self, n: int, excluded: list[str]) -> tuple[list[Candidate], bool]:
        if not self.owners:
            return [], False
        # First a fair share each (times its weight); in a later round as many as the batch still wants.
        share = max(1, math.ceil(n / sum(self.weight(owner) for owner in self.owners)))
        wanted = {owner: share * self.weight(owner) if self.rounds == 0 else n for owner in self.owners}
        self.rounds += 1
        params: list[object] = []
        for owner in self.owners:
            params += [self.queue_id, owner, self.due, *excluded, wanted[owner]]
        sql = owner_candidates_sql(len(self.owners), len(excluded), self.lock_columns)
        if self.lock_columns:
            tasks = TaskQueue.objects.raw(sql, params)
            rows = [Candidate(task.pk, task.owner_id, None, task.priority, task.run_at, task) for task in tasks]
        else:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                rows = [Candidate(*row) for row in cursor.fetchall()]
        by_owner: dict[int, list[Candidate]] = {owner: [] for owner in self.owners}
        for row in rows:
            by_owner[row.owner_id].append(row)
        cut = [owner for owner, found in by_owner.items() if len(found) >= wanted[owner]]
        self.short = bool(cut)
        self.owners = cut or self.owners
        ranked = [(sorted(found, key=_claim_order), self.weight(owner)) for owner, found in by_owner.items()]
        return list(_interleave(ranked)), bool(cut)


def _claim_order(candidate: Candidate) -> tuple:
    return (-candidate.priority, candidate.run_at, candidate.pk)


def _interleave(lists: list[tuple[list[Candidate], int]]) -> Iterable[Candidate]:
    """Every list's first `weight` entries, then every list's next `weight`, ..."""
    for rank in range(max((math.ceil(len(found) / weight) for found, weight in lists), default=0)):
        for found, weight in lists:
            yield from found[rank * weight : (rank + 1) * weight]


# --- Keys and buckets --------------------------------------------------------------------------


def fold_key(key: str) -> str:
    """A concurrency key as MySQL's default collations compare it (case and trailing spaces ignored)."""
    return key.casefold().rstrip(" ") if connection.vendor == "mysql" else key


def _bucket_key(queue: QueueConfig, key: str | None) -> str:
    """The bucket a task with this concurrency key draws from: a digest, so no collation can merge two."""
    if not queue.rate_limit_per_key or key is None:
        return SHARED_BUCKET
    return hashlib.sha256(fold_key(key).encode()).hexdigest()[:40]


def _load_buckets(plan: Plan, keys: set[str], now: datetime) -> None:
    """Read the buckets not read yet (the caller holds the queue's row lock) and count their tokens at `now`."""
    assert plan.rate is not None
    keys = keys - plan.buckets.keys()
    if not keys:
        return
    rows = QueueRateBucket.objects.filter(queue_id=plan.queue.pk, key__in=keys)
    for key, tokens, refilled_at in rows.values_list("key", "tokens", "refilled_at"):
        tokens, refilled_at = limits.refill(tokens, refilled_at, now, plan.rate)
        plan.buckets[key] = Bucket(key=key, tokens=tokens, refilled_at=refilled_at, stored=True)
    for key in keys - plan.buckets.keys():
        # A new bucket starts full: the same as one idle for long.
        plan.buckets[key] = Bucket(key=key, tokens=float(plan.rate.burst), refilled_at=now, stored=False)
