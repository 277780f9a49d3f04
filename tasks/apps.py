from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = _("Tasks")

    def ready(self) -> None:
        from tasks import openapi, registry  # noqa: F401 - openapi registers drf-spectacular extensions

        registry.autodiscover()

        from django.db.models.signals import post_delete, post_save

        from tasks import queue_cache
        from tasks.models import QueueConfig

        post_save.connect(queue_cache.forget, sender=QueueConfig, dispatch_uid="taskhub-queue-cache-save")
        post_delete.connect(queue_cache.forget, sender=QueueConfig, dispatch_uid="taskhub-queue-cache-delete")
