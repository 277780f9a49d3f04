"""The django-tasks-db peer's task: a no-op returning its payload, like TaskHub's `echo`."""

from typing import Any

from django_tasks import task


@task()
def noop(payload: dict[str, Any]) -> dict[str, Any]:
    """Return the payload unchanged."""
    return payload
