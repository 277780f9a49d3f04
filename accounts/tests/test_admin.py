"""Staff can inspect issued tokens in the admin but never read a refresh token itself."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

from accounts.services import session_start

pytestmark = pytest.mark.django_db


def test_the_token_admin_never_shows_the_refresh_token(client, staff, alice):
    pair = session_start(user=alice)
    record = OutstandingToken.objects.get(token=pair.refresh)
    client.force_login(staff)

    for url in (
        reverse("admin:token_blacklist_outstandingtoken_changelist"),
        reverse("admin:token_blacklist_outstandingtoken_change", args=[record.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 200
        body = response.content.decode()
        assert pair.refresh not in body
        assert pair.refresh.split(".")[2] not in body
    assert record.jti in body
