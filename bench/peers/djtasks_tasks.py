"""The django-tasks-db peer's task: a no-op returning its payload, like TaskHub's `echo`.

The `djtasks` section also enqueues it on TaskHub (TaskHub's settings bind `@task` to
TaskHubBackend): the same task code on both backends.
"""

from typing import Any

try:
    from django.tasks import task  # Django 6.x
except ImportError:
    from django_tasks import task


@task()
def noop(payload: dict[str, Any]) -> dict[str, Any]:
    """Return the payload unchanged."""
    return payload
