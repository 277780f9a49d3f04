"""DRF's permissions: anonymous requests get `token_missing` (not `not_authenticated`), others 403."""

from __future__ import annotations

import pytest
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from accounts.services import session_start

pytestmark = pytest.mark.django_db


class StaffOnly(APIView):
    permission_classes = [IsAdminUser]

    def get(self, request):
        return Response({"ok": True})


class UsersOnly(StaffOnly):
    permission_classes = [IsAuthenticated]


def call(view: type[APIView], user=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {session_start(user=user).access}"} if user else {}
    return view.as_view()(APIRequestFactory().get("/x/", **headers))


@pytest.mark.parametrize("view", [StaffOnly, UsersOnly])
def test_anonymous_requests_get_401_token_missing(view):
    response = call(view)

    assert response.status_code == 401
    assert response.data["code"] == "token_missing"
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_staff_only_refuses_other_users_with_403_and_admits_staff(alice, staff):
    assert call(StaffOnly, alice).status_code == 403
    assert call(StaffOnly, staff).status_code == 200
    assert call(UsersOnly, alice).status_code == 200
