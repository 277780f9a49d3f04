"""TaskHub as a backend of Django's task framework: any `@task` function runs on TaskHub's workers.

    TASKS = {"default": {"BACKEND": "tasks.backends.TaskHubBackend", "QUEUES": [], "OPTIONS": {}}}

One backend class for Django 6.x (`django.tasks`) and Django 5.2 with the `django-tasks`
backport (`compat.py` imports whichever exists). A Django task is a row of `task_queue` like any
other (`kind` "django", `task_type` its dotted path, `payload` its arguments), run by the same
workers beside the registry handlers. docs/DJANGO_TASKS.md is the guide.

compat.py    the framework's names, from django.tasks or django_tasks
task.py      TaskHubTask (per-task max_attempts, backoff, timeout) and the argument rules
backend.py   TaskHubBackend: validate, enqueue, get_result, checks
results.py   a row as a TaskResult; a dotted path resolved to a Task (or refused)
owner.py     who owns a task enqueued from Python: `enqueue_as(user)` or the system user
running.py   the worker child's side: run one Django task, compute its backoff
"""

from tasks.backends.backend import TaskHubBackend
from tasks.backends.owner import enqueue_as
from tasks.backends.task import InvalidTaskArguments, TaskHubTask

__all__ = ["InvalidTaskArguments", "TaskHubBackend", "TaskHubTask", "enqueue_as"]
