"""Rules for tenants and their API keys: creation, revocation, and authenticating a request's key."""

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from app.core.errors import Invalid, NotFound, Unauthorized
from app.db.base import as_utc, utcnow
from app.tenants import repository
from app.tenants.keys import generate_key, key_matches, key_prefix
from app.tenants.orm import ApiKey, Tenant

TENANT_NAME_MAX_CHARS = 100
CREATE_KEY_HINT = "create one with `compresso keys create --tenant NAME`"
LAST_USED_RESOLUTION = timedelta(minutes=1)


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    name = name.strip()
    if not name or len(name) > TENANT_NAME_MAX_CHARS:
        raise Invalid(f"A tenant name is 1 to {TENANT_NAME_MAX_CHARS} characters.")
    return repository.by_name(session, name) or repository.add(session, Tenant(name=name))


def create_key(
    session: Session, tenant_name: str, name: str | None = None, expires_in_days: float | None = None
) -> tuple[ApiKey, Tenant, str]:
    """Returns the stored key, its tenant (created when new) and the key itself, which is never stored."""
    if expires_in_days is not None and expires_in_days <= 0:
        raise Invalid("expires_in_days must be positive.")
    tenant = get_or_create_tenant(session, tenant_name)
    new = generate_key()
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days is not None else None
    key = repository.add_key(
        session, ApiKey(tenant_id=tenant.id, name=name, prefix=new.prefix, key_hash=new.key_hash, expires_at=expires_at)
    )
    return key, tenant, new.key


def revoke_key(session: Session, key_id_or_prefix: str) -> ApiKey:
    key = repository.get_key(session, key_id_or_prefix) or repository.key_by_prefix(session, key_id_or_prefix)
    if key is None:
        raise NotFound(f"No API key has the id or prefix {key_id_or_prefix!r}; `compresso keys list` shows them.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


def key_state(key: ApiKey, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and as_utc(key.expires_at) <= now:
        return "expired"
    return "active"


def authenticate(session: Session, presented: str) -> Tenant:
    """The tenant of a valid, unrevoked, unexpired key; Unauthorized otherwise (never saying which part failed)."""
    prefix = key_prefix(presented)
    key = repository.key_by_prefix(session, prefix) if prefix else None
    # Hash and compare even for an unknown prefix, so a miss costs the same as a wrong secret.
    if not key_matches(presented, key.key_hash if key else None) or key is None:
        raise Unauthorized(f"The API key is not valid; {CREATE_KEY_HINT}.")
    now = utcnow()
    state = key_state(key, now)
    if state != "active":
        raise Unauthorized(f"The API key {key.prefix} is {state}; {CREATE_KEY_HINT}.")
    # To the minute: a client polling a job's status many times a second must not turn every
    # read into a write that queues behind the workers' writes (SQLite has one writer at a time).
    if key.last_used_at is None or now - as_utc(key.last_used_at) >= LAST_USED_RESOLUTION:
        key.last_used_at = now
    return repository.get(session, key.tenant_id)
