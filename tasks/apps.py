from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = _("Tasks")

    def ready(self) -> None:
        from tasks import openapi, registry  # noqa: F401 - openapi registers drf-spectacular extensions

        registry.autodiscover()
