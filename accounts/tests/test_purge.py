"""Purging expired token rows in bounded batches, never touching live ones."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from accounts import services
from accounts.models import IssuedRefreshToken, PasswordRehash, ThrottleWindow, TokenFamily
from accounts.purge import purge_expired
from accounts.tests.helpers import claims

pytestmark = pytest.mark.django_db


def expire(pair: services.TokenPair, *, ago: timedelta) -> None:
    """Backdate every refresh token of the pair's family (and the family) to have expired `ago`."""
    family_id = claims(pair.refresh)["fam"]
    expired_at = timezone.now() - ago
    OutstandingToken.objects.filter(taskhub_issue__family_id=family_id).update(expires_at=expired_at)
    TokenFamily.objects.filter(pk=family_id).update(expires_at=expired_at)


def test_it_deletes_expired_tokens_with_their_blacklist_and_rotation_rows(alice):
    old = services.session_start(user=alice)
    services.session_refresh(raw_refresh=old.refresh)
    live = services.session_start(user=alice)
    expire(old, ago=timedelta(days=1))
    ThrottleWindow.objects.create(key="a" * 64, expires_at=timezone.now() - timedelta(seconds=1))
    ThrottleWindow.objects.create(key="b" * 64, expires_at=timezone.now() + timedelta(minutes=1))

    result = purge_expired(batch_size=1)

    assert result.finished
    assert result.deleted == {
        "outstanding_tokens": 2,
        "token_families": 1,
        "throttle_windows": 1,
        "password_rehashes": 0,
    }
    assert not BlacklistedToken.objects.exists()
    assert list(IssuedRefreshToken.objects.values_list("family_id", flat=True)) == [claims(live.refresh)["fam"]]
    assert services.session_refresh(raw_refresh=live.refresh).refresh
    assert ThrottleWindow.objects.get().key == "b" * 64


def test_it_keeps_tokens_that_expired_within_the_leeway(alice):
    pair = services.session_start(user=alice)
    expire(pair, ago=timedelta(seconds=5))

    assert purge_expired().deleted["outstanding_tokens"] == 0
    assert OutstandingToken.objects.count() == 1


def test_it_stops_after_max_batches_and_says_so(alice):
    for _ in range(3):
        expire(services.session_start(user=alice), ago=timedelta(days=1))

    with CaptureQueriesContext(connection) as queries:
        result = purge_expired(batch_size=1, max_batches=2)

    assert (result.finished, result.batches) == (False, 2)
    assert OutstandingToken.objects.count() == 1
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert deletes and all("LIMIT" not in sql for sql in deletes)


def test_the_command_reports_what_it_purged(alice):
    expire(services.session_start(user=alice), ago=timedelta(days=1))
    out = StringIO()

    call_command("purge_expired_tokens", "--batch-size", "10", stdout=out)

    assert "outstanding_tokens: 1" in out.getvalue() and "token_families: 1" in out.getvalue()
    assert not OutstandingToken.objects.exists()


@pytest.mark.parametrize("args", [["--batch-size", "0"], ["--max-batches", "0"], ["--sleep", "-1"]])
def test_the_command_refuses_bad_arguments(args):
    with pytest.raises(CommandError):
        call_command("purge_expired_tokens", *args, stdout=StringIO())


def test_it_forgets_password_rehashes_once_no_token_can_carry_their_old_claim(alice):
    recent = PasswordRehash.objects.create(user=alice, old_fingerprint="a", new_fingerprint="b")
    old = PasswordRehash.objects.create(user=alice, old_fingerprint="b", new_fingerprint="c")
    lifetime = timedelta(seconds=settings.JWT_REFRESH_TOKEN_LIFETIME_SECONDS)
    PasswordRehash.objects.filter(pk=old.pk).update(created_at=timezone.now() - lifetime - timedelta(hours=1))

    assert purge_expired().deleted["password_rehashes"] == 1
    assert list(PasswordRehash.objects.all()) == [recent]
