from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from django.core.signals import request_finished
        from django.db.backends.signals import connection_created

        from core.db.setup import on_connection_created
        from core.request_context import clear_request_id

        connection_created.connect(on_connection_created, dispatch_uid="taskhub-session-setup")
        # After Django's own request_finished receivers, so their log lines keep the id.
        request_finished.connect(clear_request_id, dispatch_uid="taskhub-clear-request-id")
