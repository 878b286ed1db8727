"""Cursor pagination for every list: newest first, stable under inserts, filterable by creation time.

The cursor is opaque to clients: the (created_at, id) of the last row sent, so the next page starts
strictly after it even when rows are added in between (an offset would skip or repeat them).
"""

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from app.core.errors import Invalid
from app.db.base import as_utc

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    items: list[Item]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page.")


@dataclass(frozen=True)
class PageRequest:
    limit: int
    after: tuple[datetime, str] | None
    created_since: datetime | None


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, row_id = json.loads(raw)
        return datetime.fromisoformat(created_at), str(row_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise Invalid(
            "The cursor is not one this API gave out; pass back `next_cursor` unchanged, or omit it for the first page.",
            errors=[{"loc": ["query", "cursor"], "msg": "not a valid cursor"}],
        ) from exc


def page_request(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=500, description="`next_cursor` of the previous page.")] = None,
    created_since: Annotated[
        datetime | None, Query(description="Only items created at or after this time (ISO 8601).")
    ] = None,
) -> PageRequest:
    since = as_utc(created_since)
    try:
        since = since.astimezone(UTC) if since else None
    except OverflowError as exc:  # e.g. 0001-01-01T00:00+01:00, before the first representable UTC time
        raise Invalid(
            "created_since is outside the range of dates this API can compare.",
            errors=[{"loc": ["query", "created_since"], "msg": "date out of range"}],
        ) from exc
    return PageRequest(limit=limit, after=decode_cursor(cursor) if cursor else None, created_since=since)


PageDep = Annotated[PageRequest, Depends(page_request)]


def paginate(session: Session, query: Select, entity: type, page: PageRequest) -> tuple[list, str | None]:
    """Runs `query` (a select of `entity`, already filtered) one page at a time, newest first."""
    created_at, row_id = entity.created_at, entity.id
    if page.created_since is not None:
        query = query.where(created_at >= page.created_since)
    if page.after is not None:
        after_time, after_id = page.after
        query = query.where(or_(created_at < after_time, and_(created_at == after_time, row_id < after_id)))
    rows = list(session.scalars(query.order_by(created_at.desc(), row_id.desc()).limit(page.limit + 1)))
    if len(rows) <= page.limit:
        return rows, None
    rows = rows[: page.limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)
