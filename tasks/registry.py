"""The handler registry: maps a `task_type` to the Python callable that runs it.

Apps register handlers in a `handlers.py` module, discovered at start-up like `admin.py`:

    from tasks.registry import register

    @register("thumbnail")
    def make_thumbnail(payload: dict, ctx: TaskContext) -> dict:
        ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Protocol

from django.conf import settings
from django.utils.module_loading import autodiscover_modules


class TaskContext(Protocol):
    """What a handler may ask of the worker running it."""

    task_id: int
    attempt: int

    def set_progress(self, percent: int, message: str = "") -> None: ...

    @property
    def cancel_requested(self) -> bool: ...


HandlerFunc = Callable[[dict[str, Any], TaskContext], Any]


@dataclass(frozen=True)
class Handler:
    task_type: str
    func: HandlerFunc
    description: str


class UnknownTaskType(LookupError):
    def __init__(self, task_type: str) -> None:
        self.task_type = task_type
        super().__init__(f"unknown task type {task_type!r}; registered: {', '.join(registered_types())}")


_handlers: dict[str, Handler] = {}


def register(task_type: str, *, description: str = "") -> Callable[[HandlerFunc], HandlerFunc]:
    """Register the decorated callable as the handler of `task_type`."""

    def decorator(func: HandlerFunc) -> HandlerFunc:
        existing = _handlers.get(task_type)
        if existing is not None and existing.func is not func:
            raise ValueError(f"task type {task_type!r} is already registered to {existing.func!r}")
        summary = description or next(iter((func.__doc__ or "").strip().splitlines()), "")
        _handlers[task_type] = Handler(task_type, func, summary)
        return func

    return decorator


def get_handler(task_type: str) -> Handler:
    """Return the handler registered for `task_type`, or raise UnknownTaskType."""
    try:
        return _handlers[task_type]
    except KeyError:
        raise UnknownTaskType(task_type) from None


def is_registered(task_type: str) -> bool:
    return task_type in _handlers


def registered_types() -> list[str]:
    """Return the registered task types, sorted."""
    return sorted(_handlers)


def autodiscover() -> None:
    """Import every installed app's `handlers` module and the TASKHUB_EXTRA_HANDLER_MODULES.

    The web tier and the worker both call this at start-up, so a task type the worker can run
    is also one the API accepts.
    """
    autodiscover_modules("handlers")
    for module in settings.TASKHUB_EXTRA_HANDLER_MODULES:
        import_module(module)
