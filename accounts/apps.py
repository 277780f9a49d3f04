from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        # Registers the OpenAPI extension for the authentication class (drf-spectacular finds it by import).
        from accounts import schema  # noqa: F401
