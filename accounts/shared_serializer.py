"""The `me_serializer` shortcut: one `MeSerializer` instance serves every `GET /api/auth/me/`.

DRF builds a serializer per use and deep-copies its declared fields into it; for a read-only
serializer whose fields are bound once, one instance can represent any user. It calls
`to_representation` directly, skipping `.data`, and relies on DRF keeping no per-call state on
the instance or its bound fields while representing (true of DRF 3.x's read-only fields). The
plain version, in `accounts.apis.MeApi`, builds a serializer per request.
"""

from __future__ import annotations

from typing import Any

from accounts.serializers import MeSerializer

_ME = MeSerializer()
_ME.fields  # noqa: B018 - bind the fields now, at import, not racing in the first requests' threads


def me_data(user: Any) -> dict[str, Any]:
    """Return `user` as `MeSerializer` represents it."""
    return _ME.to_representation(user)
