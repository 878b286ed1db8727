"""Who is calling: the tenant of the request's API key, or the default tenant while auth is off.

Scripts send `Authorization: Bearer <key>`; the dashboard's browser sends the same key in an
HttpOnly, SameSite=Strict cookie set by its login form, so other sites cannot send it.
"""

from typing import Annotated

from fastapi import Depends, Request

from app.core.deps import SessionDep, SettingsDep
from app.core.errors import Unauthorized
from app.tenants import repository, service
from app.tenants.orm import DEFAULT_TENANT_ID, Tenant

KEY_COOKIE = "compresso_key"


def presented_key(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(KEY_COOKIE)


def current_tenant(request: Request, session: SessionDep, settings: SettingsDep) -> Tenant:
    if not settings.auth_enabled:
        tenant = repository.get(session, DEFAULT_TENANT_ID)
        if tenant is None:
            raise RuntimeError("The default tenant is missing; run `compresso migrate`.")
        return tenant
    key = presented_key(request)
    if key is None:
        raise Unauthorized(f"Send `Authorization: Bearer <API key>`; {service.CREATE_KEY_HINT}.")
    return service.authenticate(session, key)


TenantDep = Annotated[Tenant, Depends(current_tenant)]
