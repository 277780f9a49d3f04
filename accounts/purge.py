"""Delete expired token bookkeeping in small batches, safe to run while traffic flows.

simplejwt's `flushexpiredtokens` is one unbounded DELETE: on a big table it holds locks for a
long time and grows the undo log. Here every batch is its own short transaction on primary keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import models, transaction
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

from accounts.models import PasswordRehash, ThrottleWindow, TokenFamily
from accounts.tokens import leeway, refresh_lifetime

# A token just past `exp` is still accepted within the leeway; keep its rows a while longer.
SAFETY_MARGIN = timedelta(seconds=60)


@dataclass
class PurgeResult:
    deleted: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    finished: bool = True


def purge_expired(
    *, batch_size: int = 1000, max_batches: int = 1000, pause: float = 0.0, now: datetime | None = None
) -> PurgeResult:
    """Delete expired outstanding tokens (with their blacklist and rotation rows), families and throttle windows.

    1. Outstanding tokens expired longer than the leeway plus a margin; their BlacklistedToken and
       IssuedRefreshToken rows go with them (ON DELETE CASCADE in Django's collector).
    2. Token families whose newest refresh token has likewise expired.
    3. Throttle windows that have ended.
    4. Password-rehash records older than any refresh token that could still carry their old claim.
    Stops after `max_batches` batches in total (`finished` is then False: run it again).
    """
    now = timezone.now() if now is None else now
    token_cutoff = now - leeway() - SAFETY_MARGIN
    result = PurgeResult()
    for label, queryset in (
        ("outstanding_tokens", OutstandingToken.objects.filter(expires_at__lt=token_cutoff)),
        ("token_families", TokenFamily.objects.filter(expires_at__lt=token_cutoff)),
        ("throttle_windows", ThrottleWindow.objects.filter(expires_at__lt=now)),
        # Refresh tokens carrying a pre-upgrade claim are all expired by then (successors carry the new one).
        ("password_rehashes", PasswordRehash.objects.filter(created_at__lt=token_cutoff - refresh_lifetime())),
    ):
        result.deleted[label] = 0
        while True:
            if result.batches >= max_batches:
                result.finished = False
                return result
            deleted = _delete_batch(queryset, batch_size)
            if not deleted:
                break
            result.batches += 1
            result.deleted[label] += deleted
            if pause:
                time.sleep(pause)
    return result


def _delete_batch(queryset: models.QuerySet, batch_size: int) -> int:
    # MySQL cannot DELETE … WHERE id IN (SELECT … LIMIT n): fetch the keys, then delete by key.
    keys = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
    if not keys:
        return 0
    with transaction.atomic():
        queryset.model._default_manager.filter(pk__in=keys).delete()
    return len(keys)
