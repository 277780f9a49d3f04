"""Secret keys: from the environment, or (in development only) persisted under var/."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

MIN_DEV_KEY_BYTES = 48


def load_secret(name: str, *, value: str | None, debug: bool, var_dir: Path) -> str:
    """Return the secret called `name`.

    1. A non-empty value from the environment always wins.
    2. With DEBUG on, a random key is created once and kept in `var/<name>`, so every process
       started from this checkout (web server, workers, restarts) signs with the same key.
    3. With DEBUG off and no value, refuse to start: a per-process random key is exactly how
       instances end up with different secrets and log users out.
    """
    if value:
        return value
    if not debug:
        raise ImproperlyConfigured(
            f"{name} is not set. Set it in the environment or .env (the same value on every "
            f"instance and worker); refusing to start with DEBUG off and no {name}."
        )
    return _persisted_dev_key(var_dir / name.lower())


def _persisted_dev_key(path: Path) -> str:
    if path.exists():
        key = path.read_text().strip()
        if key:
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(MIN_DEV_KEY_BYTES)
    # O_EXCL: when two processes start at once, exactly one writes and both read its key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _wait_for_key(path)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def _wait_for_key(path: Path) -> str:
    """Read a key another process is writing right now."""
    for _ in range(50):
        key = path.read_text().strip()
        if key:
            return key
        time.sleep(0.02)
    raise ImproperlyConfigured(f"{path} exists but is empty; delete it or set the key in the environment.")
