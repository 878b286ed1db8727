"""Who is calling: the tenant of the request's API key, or the default tenant while auth is off.

Scripts send `Authorization: Bearer <key>`; the dashboard's browser sends the same key in an
HttpOnly, SameSite=Strict cookie set by its login form, so other sites cannot send it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.core.deps import SettingsDep
from app.core.errors import Unauthorized
from app.core.routing import Deferred
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


@dataclass(frozen=True)
class PendingTenant(Deferred):
    """The caller, once the key (or, with auth off, the default tenant) is checked in the database.
    Resolved by app.core.routing in the endpoint's own thread, with the request's session."""

    key: str | None  # None while auth is off
    # Turns a refused key into another error: the dashboard's pages redirect to the login form.
    on_refused: Callable[[Unauthorized], Exception] | None = None

    def resolve(self, session: Session) -> Tenant:
        try:
            return authenticated_tenant(session, self.key)
        except Unauthorized as exc:
            if self.on_refused is None:
                raise
            raise self.on_refused(exc) from exc


def authenticated_tenant(session: Session, key: str | None) -> Tenant:
    """The key's tenant; with no key (auth off), the default tenant."""
    if key is None:
        tenant = repository.get(session, DEFAULT_TENANT_ID)
        if tenant is None:
            raise RuntimeError("The default tenant is missing; run `compresso migrate`.")
        return tenant
    return service.authenticate(session, key)


async def current_tenant(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
) -> PendingTenant:
    """No database here (this runs on the event loop): a missing key is refused at once, a
    presented one is checked when the route resolves the PendingTenant."""
    if not settings.auth_enabled:
        return PendingTenant(None)
    key = presented_key(request, credentials)
    if key is None:
        raise Unauthorized(f"Send `Authorization: Bearer <API key>`; {service.CREATE_KEY_HINT}.")
    return PendingTenant(key)


# Endpoints receive the Tenant: routes of app.core.routing.SessionRoute resolve it first.
TenantDep = Annotated[Tenant, Depends(current_tenant)]
