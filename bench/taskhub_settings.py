"""TaskHub's own settings, serving `bench.taskhub_urls` (the product's URLs plus one reference endpoint)."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.taskhub_urls"
