"""Who owns a Django task enqueued from Python: the user given to `enqueue_as`, else the system user.

Every row of `task_queue` has an owner, and the statistics are per owner. Code with a user at
hand (a view) says so with `with enqueue_as(request.user): ...`; everything else is owned by the
system user named by `OPTIONS["OWNER"]`, which `migrate` creates (no usable password, not staff).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

DEFAULT_OWNER = "taskhub-system"

_enqueue_as: ContextVar[AbstractBaseUser | None] = ContextVar("taskhub_enqueue_as", default=None)
_system_users: dict[str, AbstractBaseUser] = {}  # username -> user, per process


@contextmanager
def enqueue_as(user: AbstractBaseUser) -> Iterator[None]:
    """Make the Django tasks enqueued inside this block `user`'s (e.g. a view's request.user)."""
    token = _enqueue_as.set(user)
    try:
        yield
    finally:
        _enqueue_as.reset(token)


def current_owner(system_username: str) -> AbstractBaseUser:
    """Return the owner of a task enqueued now: the `enqueue_as` user, else the system user."""
    user = _enqueue_as.get()
    if user is not None and user.is_authenticated:
        return user
    cached = _system_users.get(system_username)
    if cached is None:
        cached = _system_users[system_username] = ensure_system_user(system_username)
    return cached


def ensure_system_user(username: str) -> AbstractBaseUser:
    """Return the system user `username`, creating it (unusable password, not staff) if missing."""
    model = get_user_model()
    user, created = model._default_manager.get_or_create(**{model.USERNAME_FIELD: username})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def configured_owners() -> list[str]:
    """Return the OWNER of every TaskHub backend in settings.TASKS, without creating the backends."""
    from tasks.backends.backend import TaskHubBackend

    owners = []
    for params in getattr(settings, "TASKS", {}).values():
        try:
            backend = import_string(params["BACKEND"])
        except (ImportError, KeyError):
            continue  # the framework's own check reports it
        if isinstance(backend, type) and issubclass(backend, TaskHubBackend):
            owner = params.get("OPTIONS", {}).get("OWNER", DEFAULT_OWNER)
            if owner not in owners:
                owners.append(owner)
    return owners


def create_system_users(*, using: str = "default", **kwargs: Any) -> None:
    """post_migrate: create every configured system user (after a flush too) and forget cached ones."""
    _system_users.clear()
    if using != "default":
        return
    for username in configured_owners():
        ensure_system_user(username)
