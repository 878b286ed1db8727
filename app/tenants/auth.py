"""Who is calling: the tenant of the request's API key, or the default tenant while auth is off.

Scripts send `Authorization: Bearer <key>`; the dashboard's browser sends the same key in an
HttpOnly, SameSite=Strict cookie set by its login form, so other sites cannot send it.
"""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.config import Settings
from app.core.deps import SessionDep, SettingsDep
from app.core.errors import Unauthorized
from app.db.session import release_connection
from app.tenants import repository, service
from app.tenants.orm import DEFAULT_TENANT_ID, Tenant

KEY_COOKIE = "compresso_key"
# Declares the scheme in the OpenAPI document; the check itself is below (it also takes the cookie).
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An API key from `compresso keys create --tenant NAME`. Not needed on a loopback-only server "
    "unless COMPRESSO_AUTH_REQUIRED is true.",
)


def presented_key(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if credentials is not None and credentials.credentials.strip():
        return credentials.credentials.strip()
    return request.cookies.get(KEY_COOKIE)


def current_tenant(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
) -> Tenant:
    tenant = _authenticated_tenant(request, session, settings, credentials)
    # The endpoint runs in another thread, which this request may have to wait for.
    release_connection(session)
    return tenant


def _authenticated_tenant(
    request: Request, session: Session, settings: Settings, credentials: HTTPAuthorizationCredentials | None
) -> Tenant:
    if not settings.auth_enabled:
        tenant = repository.get(session, DEFAULT_TENANT_ID)
        if tenant is None:
            raise RuntimeError("The default tenant is missing; run `compresso migrate`.")
        return tenant
    key = presented_key(request, credentials)
    if key is None:
        raise Unauthorized(f"Send `Authorization: Bearer <API key>`; {service.CREATE_KEY_HINT}.")
    return service.authenticate(session, key)


TenantDep = Annotated[Tenant, Depends(current_tenant)]
