"""The web instances and workers seen recently sign with the same JWT key as this one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.checks import CheckMessage
from django.utils import timezone

from accounts.fingerprint import key_fingerprint
from diagnostics.checks.messages import error, ok
from diagnostics.checks.registration import database_check
from diagnostics.models import InstanceFingerprint
from tasks.models import WorkerProcess

CHECK = "fingerprints"
RECENT_MINUTES = 15


@dataclass(frozen=True)
class Sighting:
    role: str
    hostname: str
    pid: int
    fingerprint: str


def recent_sightings(*, minutes: int = RECENT_MINUTES) -> list[Sighting]:
    """Return the web instances and workers that reported a key fingerprint in the last `minutes`."""
    since = timezone.now() - timedelta(minutes=minutes)
    web = InstanceFingerprint.objects.filter(last_seen_at__gte=since).values_list(
        "role", "hostname", "pid", "key_fingerprint"
    )
    workers = (
        WorkerProcess.objects.filter(last_heartbeat_at__gte=since)
        .exclude(key_fingerprint="")
        .values_list("hostname", "pid", "key_fingerprint")
    )
    return [Sighting(*row) for row in web] + [Sighting("worker", *row) for row in workers]


@database_check(CHECK)
def check_key_fingerprints() -> list[CheckMessage]:
    """Compare fingerprints only: the keys themselves are never stored or printed."""
    mine = key_fingerprint(settings.JWT_SECRET_KEY)
    sightings = recent_sightings()
    differing = [s for s in sightings if s.fingerprint != mine]
    if differing:
        names = "; ".join(f"{s.role} {s.hostname} pid {s.pid} signs with kid {s.fingerprint}" for s in differing)
        return [
            error(
                CHECK,
                "diagnostics.E080",
                f"{names} — this instance signs with kid {mine}. Tokens issued by one are refused by the "
                "other: users are logged out at random.",
                "Give every instance and worker the same JWT_SECRET_KEY and restart the ones that differ.",
            )
        ]
    web = sum(1 for s in sightings if s.role != "worker")
    return [
        ok(
            CHECK,
            f"{web} web instance(s) and {len(sightings) - web} worker(s) seen in the last {RECENT_MINUTES} min "
            f"sign with kid {mine}, as this one does.",
        )
    ]
