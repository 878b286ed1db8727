"""Idempotent creation (`Idempotency-Key` on POST /v1/jobs and the uploads).

The first request with a key stores its response in the same transaction as what it created; a
retry with the same key and the same request gets that response back (with `Idempotent-Replayed:
true`) and creates nothing. Two requests racing with one key: the unique constraint lets one
insert, the other waits for it, then replays it. Only successes are stored, so a request that
failed can be retried with its key. Keys are remembered for KEY_TTL.
"""

import hashlib
import json
from datetime import timedelta
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Header
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.errors import Invalid
from app.db.base import as_utc, utcnow
from app.db.session import rollback
from app.idempotency.orm import IdempotencyRecord

KEY_TTL = timedelta(hours=24)
Created = TypeVar("Created")
REPLAYED_HEADER = "Idempotent-Replayed"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Any unique string (e.g. a UUID) per intended creation; a retry with the same key "
        "returns the first response and creates nothing new. Remembered for 24 hours.",
    ),
]


def fingerprint(request: Any) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _find(session: Session, tenant_id: str, endpoint: str, key: str) -> IdempotencyRecord | None:
    query = select(IdempotencyRecord).where(
        IdempotencyRecord.tenant_id == tenant_id, IdempotencyRecord.endpoint == endpoint, IdempotencyRecord.key == key
    )
    record = session.scalar(query)
    if record is not None and as_utc(record.created_at) < utcnow() - KEY_TTL:
        session.delete(record)  # expired: the key is free again
        session.flush()
        return None
    return record


def _replay(record: IdempotencyRecord, request_hash: str) -> JSONResponse:
    if record.request_hash != request_hash:
        raise Invalid(
            f"The Idempotency-Key {record.key!r} was already used with a different request "
            f"on {record.endpoint}; send a new key for a new request.",
            problem="idempotency-key-reused",
            errors=[{"loc": ["header", "Idempotency-Key"], "msg": "already used with a different request"}],
        )
    return JSONResponse(record.response, status_code=record.status_code, headers={REPLAYED_HEADER: "true"})


def seen(session: Session, tenant_id: str, endpoint: str, key: str | None) -> bool:
    return key is not None and _find(session, tenant_id, endpoint, key) is not None


def replay(session: Session, tenant_id: str, endpoint: str, key: str | None, request_hash: str) -> JSONResponse | None:
    """The stored response when this key was used before (or a 422 when it was for another request)."""
    if key is None:
        return None
    record = _find(session, tenant_id, endpoint, key)
    return _replay(record, request_hash) if record is not None else None


def remember(
    session: Session, tenant_id: str, endpoint: str, key: str | None, request_hash: str,
    status_code: int, response: dict[str, Any],
) -> JSONResponse | None:
    """Stores the response of a creation, in its transaction. Returns the winner's response instead
    when a concurrent request with the same key committed first; the caller must then return it
    (and this request's own work is rolled back with the session)."""
    if key is None:
        return None
    record = IdempotencyRecord(
        tenant_id=tenant_id, endpoint=endpoint, key=key, request_hash=request_hash,
        status_code=status_code, response=response,
    )
    try:
        with session.begin_nested():
            session.add(record)
            session.flush()
    except IntegrityError:
        # Drops what this request created (and its after-commit work, such as enqueueing a job);
        # the first request's result stands.
        rollback(session)
        winner = _find(session, tenant_id, endpoint, key)
        if winner is None:
            raise
        return _replay(winner, request_hash)
    return None


def create_once(
    session: Session,
    tenant_id: str,
    endpoint: str,
    key: str | None,
    request: Any,
    status_code: int,
    create: Callable[[], Created],
    serialize: Callable[[Created], dict[str, Any]],
) -> Created | JSONResponse:
    """Runs `create` unless `key` was used before; returns what it created, or the first response."""
    request_hash = fingerprint(request)
    replayed = replay(session, tenant_id, endpoint, key, request_hash)
    if replayed is not None:
        return replayed
    created = create()
    winner = remember(session, tenant_id, endpoint, key, request_hash, status_code, serialize(created))
    return created if winner is None else winner
