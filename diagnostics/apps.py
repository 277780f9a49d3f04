from django.apps import AppConfig


class DiagnosticsConfig(AppConfig):
    name = "diagnostics"
    verbose_name = "Diagnostics"

    def ready(self) -> None:
        from django.core.signals import request_finished
        from django.db.backends.signals import connection_created

        from diagnostics.request_context import clear_request_id
        from diagnostics.session_setup import on_connection_created

        connection_created.connect(on_connection_created, dispatch_uid="taskhub-session-setup")
        # After Django's own request_finished receivers, so their log lines keep the id.
        request_finished.connect(clear_request_id, dispatch_uid="taskhub-clear-request-id")

        from diagnostics.checks import framework  # noqa: F401 — registers the production checks with Django
