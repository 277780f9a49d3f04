"""Small examples of using TaskHub from Django code (docs/DJANGO_TASKS.md)."""
