from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = _("Tasks")

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from tasks import openapi, registry  # noqa: F401 - openapi registers drf-spectacular extensions
        from tasks.backends.owner import create_system_users

        registry.autodiscover()
        # The owner of Django tasks enqueued with no user, created by migrate (and after a flush).
        post_migrate.connect(create_system_users, sender=self, dispatch_uid="tasks.create_system_users")
