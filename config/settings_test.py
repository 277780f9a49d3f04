"""Settings for the test suite: the real settings module, fed a test environment."""

import os
from pathlib import Path

# Tests run as production does (DEBUG off), so secrets must be given explicitly.
os.environ.setdefault("JWT_SECRET_KEY", "test-jwt-secret-key-0123456789abcdef0123456789")
os.environ.setdefault("DJANGO_SECRET_KEY", "test-django-secret-key-0123456789abcdef0123456789")
os.environ.setdefault("TASKHUB_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))
# Not the server defaults, so tests can tell the init_command really ran.
os.environ.setdefault("MYSQL_WAIT_TIMEOUT", "3600")
os.environ.setdefault("MYSQL_INTERACTIVE_TIMEOUT", "3700")
# A developer's .env must not leak into the tests.
os.environ["TASKHUB_READ_DOTENV"] = "0"

from config.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
