from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = _("Tasks")

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_migrate, post_save

        from tasks import openapi, queue_cache, registry, wakeups  # noqa: F401 - openapi registers drf-spectacular extensions
        from tasks.backends.owner import create_system_users
        from tasks.models import QueueConfig

        registry.autodiscover()
        # A queue changed in this process is read afresh by the next enqueue.
        post_save.connect(queue_cache.forget, sender=QueueConfig, dispatch_uid="taskhub-queue-cache-save")
        post_delete.connect(queue_cache.forget, sender=QueueConfig, dispatch_uid="taskhub-queue-cache-delete")
        # A queue resumed or given more room wakes its idle workers.
        post_save.connect(wakeups.queue_saved, sender=QueueConfig, dispatch_uid="taskhub-queue-wakeup")
        # The owner of Django tasks enqueued with no user, created by migrate (and after a flush).
        post_migrate.connect(create_system_users, sender=self, dispatch_uid="tasks.create_system_users")
