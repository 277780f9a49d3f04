"""The user lookup behind authentication: compiled once (the `user_lookup` shortcut) or by the ORM, the same user."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from accounts import fast_lookup, selectors
from accounts.services import session_logout_all, session_start
from accounts.tests.helpers import claims

pytestmark = pytest.mark.django_db


def _both(user_id, family_id):
    return (
        fast_lookup.find_user(user_id=user_id, family_id=family_id),
        selectors._find_user(user_id=user_id, family_id=family_id),
    )


def _fields(user) -> dict:
    return {field.attname: getattr(user, field.attname) for field in get_user_model()._meta.concrete_fields}


@pytest.mark.parametrize("revoked", [False, True], ids=["live family", "revoked family"])
def test_both_lookups_load_the_same_user_fields_and_family_flag(alice, revoked):
    alice.is_staff, alice.first_name, alice.last_login = True, "Älice 🚀", timezone.now()
    alice.save()
    family = claims(session_start(user=alice).access)["fam"]
    if revoked:
        session_logout_all(user=alice)

    compiled, orm = _both(alice.pk, family)

    assert _fields(compiled) == _fields(orm)
    assert {type(v) for v in _fields(compiled).values()} == {type(v) for v in _fields(orm).values()}
    assert compiled.taskhub_family_revoked is orm.taskhub_family_revoked is revoked
    assert (compiled._state.adding, compiled._state.db) == (orm._state.adding, orm._state.db) == (False, "default")


def test_both_lookups_find_no_one_for_a_missing_user(alice):
    family = claims(session_start(user=alice).access)["fam"]
    assert _both(alice.pk + 1000, family) == (None, None)


@pytest.mark.parametrize("bob_logged_out", [False, True])
def test_a_family_of_another_user_is_never_a_live_family_of_this_one(alice, bob, bob_logged_out):
    bobs_family = claims(session_start(user=bob).access)["fam"]
    if bob_logged_out:
        session_logout_all(user=bob)

    compiled, orm = _both(alice.pk, bobs_family)

    assert compiled.taskhub_family_revoked is orm.taskhub_family_revoked is True
