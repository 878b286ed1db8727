"""Streamed artifact downloads."""

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, StreamingResponse

from app.artifacts import repository
from app.core.deps import SessionDep, StorageDep
from app.core.errors import NotFound
from app.core.routing import SessionRoute
from app.tenants.auth import TenantDep

router = APIRouter(route_class=SessionRoute, prefix="/v1/artifacts", tags=["artifacts"])

MEDIA_TYPES = {".zip": "application/zip", ".json": "application/json"}


@router.get(
    "/{artifact_id}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The file, streamed."},
        307: {"description": "With COMPRESSO_STORAGE_PRESIGN: a presigned URL of the bucket to download it from."},
    },
)
def download_artifact(artifact_id: str, session: SessionDep, storage: StorageDep, tenant: TenantDep):
    """Streams the file with its Content-Length and its sha256 in the X-Content-SHA256 header."""
    artifact = repository.get_owned(session, tenant.id, artifact_id)
    if artifact is None or not storage.exists(artifact.storage_key):
        raise NotFound(f"Artifact {artifact_id} not found.")
    presigned = storage.presigned_url(artifact.storage_key, artifact.filename)
    if presigned is not None:  # COMPRESSO_STORAGE_PRESIGN: the bucket serves the bytes, not the API
        return RedirectResponse(presigned, status_code=307, headers={"X-Content-SHA256": artifact.sha256})
    suffix = "." + artifact.filename.rsplit(".", 1)[-1]
    return StreamingResponse(
        storage.open_chunks(artifact.storage_key),
        media_type=MEDIA_TYPES.get(suffix, "application/octet-stream"),
        headers={
            "Content-Length": str(artifact.size_bytes),
            "Content-Disposition": f'attachment; filename="{artifact.filename}"',
            "X-Content-SHA256": artifact.sha256,
        },
    )
