"""One timestamp format on every surface: RFC 3339, UTC, milliseconds, `Z`
(`2026-12-05T21:43:18.123Z`). Databases hand back naive UTC datetimes; they are read as UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import PlainSerializer


def rfc3339(moment: datetime) -> str:
    """`moment` as RFC 3339 UTC with milliseconds; a naive datetime is taken to be UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def rfc3339_ms(epoch_ms: int) -> str:
    """An epoch in milliseconds (Redis-held times such as presence) in the same format."""
    return rfc3339(datetime.fromtimestamp(epoch_ms / 1000, UTC))


# a pydantic field type that serializes in that format: `created_at: Timestamp`
Timestamp = Annotated[datetime, PlainSerializer(rfc3339, return_type=str, when_used="json")]
