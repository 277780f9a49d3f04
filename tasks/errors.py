"""What goes wrong with tasks: the exceptions services and handlers raise, and their API answers.

Service exceptions carry plain messages; `translated_errors` turns them into the API's
400/409/413/429 answers in the `{detail, code}` shape (`core.errors`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError

if TYPE_CHECKING:
    from tasks.models import QueueConfig


class TaskCancelled(Exception):
    """Raised by a handler that stops because its cancellation was requested."""


class TaskTimeout(Exception):
    """An attempt ran past its task timeout and its worker process was killed (recorded, never raised)."""


class WorkerLost(Exception):
    """The worker (or its process) running an attempt died (recorded, never raised)."""


class TaskStateConflict(Exception):
    """The task is not in a state that allows the requested change."""

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status


class TaskSpecInvalid(ValueError):
    """A task spec breaks a rule; `errors` maps each offending field to a message."""

    def __init__(self, errors: dict[str, str], *, index: int | None = None) -> None:
        self.errors = errors
        self.index = index
        where = _("task %(index)d: ") % {"index": index} if index is not None else ""
        super().__init__(where + "; ".join(f"{name}: {message}" for name, message in errors.items()))


class PayloadTooLarge(ValueError):
    """A payload is larger than `TASK_PAYLOAD_MAX_BYTES` once serialised."""

    def __init__(self, size: int, limit: int, *, index: int | None = None) -> None:
        self.size, self.limit, self.index = size, limit, index
        where = _("task %(index)d: ") % {"index": index} if index is not None else ""
        message = _("payload is %(size)d bytes as JSON; the limit is %(limit)d bytes") % {"size": size, "limit": limit}
        super().__init__(where + message)


class QuotaExceeded(Exception):
    """Enqueueing would take a user past a queue's `max_active_per_user`."""

    def __init__(self, *, queue: QueueConfig, active: int, requested: int) -> None:
        self.queue, self.active, self.requested = queue, active, requested
        super().__init__(
            _(
                "queue %(queue)s allows %(limit)d active tasks per user; you have %(active)d and asked for %(requested)d more"
            )
            % {"queue": repr(queue.name), "limit": queue.max_active_per_user, "active": active, "requested": requested}
        )


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = gettext_lazy("The task's state does not allow this.")
    default_code = "conflict"


class PayloadTooLargeError(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = gettext_lazy("Payload too large.")
    default_code = "payload_too_large"


class QuotaExceededError(APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = gettext_lazy("Too many active tasks in this queue.")
    default_code = "quota_exceeded"


@contextmanager
def translated_errors(*, bulk: bool = False) -> Iterator[None]:
    """Turn service exceptions into the API's 400/409/413/429 answers."""
    try:
        yield
    except TaskSpecInvalid as exc:
        errors = {name: [message] for name, message in exc.errors.items()}
        if bulk and exc.index is not None:
            errors = {"tasks": {str(exc.index): errors}}
        raise ValidationError(errors) from exc
    except PayloadTooLarge as exc:
        raise PayloadTooLargeError(str(exc)) from exc
    except QuotaExceeded as exc:
        raise QuotaExceededError(str(exc)) from exc
    except TaskStateConflict as exc:
        raise Conflict({"detail": str(exc), "code": "conflict", "status": exc.status}) from exc
    except DjangoValidationError as exc:
        raise ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        ) from exc
