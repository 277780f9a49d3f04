"""API errors of the task endpoints, and the translation of service exceptions into them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.translation import gettext_lazy as _
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError

from tasks.exceptions import TaskStateConflict
from tasks.services import QuotaExceeded
from tasks.specs import PayloadTooLarge, TaskSpecInvalid


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = _("The task's state does not allow this.")
    default_code = "conflict"


class PayloadTooLargeError(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = _("Payload too large.")
    default_code = "payload_too_large"


class QuotaExceededError(APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = _("Too many active tasks in this queue.")
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
