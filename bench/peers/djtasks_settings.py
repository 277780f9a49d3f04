"""Minimal standalone Django settings for the django-tasks-db peer (database `bench_djtasks`).

Connection settings mirror TaskHub's MySQL settings (utf8mb4, READ COMMITTED, persistent
connections with health checks) so the comparison is the queue design, not the driver set-up:
with Django's default CONN_MAX_AGE=0 `db_worker` would reconnect after every task.
"""

import os

SECRET_KEY = "bench-only-not-secret"  # a throwaway settings module for the peer
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django_tasks", "django_tasks_db"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.mysql",
        "HOST": os.environ.get("MYSQL_HOST", "127.0.0.1"),
        "PORT": int(os.environ.get("MYSQL_PORT", "3306")),
        "USER": os.environ.get("MYSQL_USERNAME", "root"),
        "PASSWORD": os.environ.get("MYSQL_PASSWORD", ""),
        "NAME": os.environ.get("BENCH_DJTASKS_DATABASE", "bench_djtasks"),
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {"charset": "utf8mb4", "isolation_level": "read committed"},
    }
}
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
