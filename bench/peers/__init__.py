"""The peers TaskHub is measured against: django-tasks-db, Celery on Redis, a raw-SQL loop."""
