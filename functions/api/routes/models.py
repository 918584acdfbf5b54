"""Models: what is mirrored, what the catalog offers, and uploads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from modelserve.functions.api.deps import ApiDeps
from modelserve.functions.api.schemas import CatalogModel, Model, Models
from modelserve.functions.api.upload import UPLOAD_BODY, UploadLimits, receive_model
from modelserve.functions.catalog.base import CatalogError
from modelserve.shared.auth.tokens import Claims
from modelserve.shared.db import repo
from modelserve.shared.db.models import Role


def router(deps: ApiDeps) -> APIRouter:
    api = APIRouter(tags=["models"])
    viewer, operator = deps.role(Role.VIEWER), deps.role(Role.OPERATOR)

    @api.get("/models", response_model=Models)
    async def models(claims: Claims = viewer) -> Models:
        async with deps.sessions() as session:
            mirrored = [Model.of(m) for m in await repo.list_models(session)]
        names = {m.model_name for m in mirrored}
        try:
            entries = await deps.catalog.entries()
        except CatalogError:
            entries = []
        return Models(
            mirrored=mirrored,
            catalog=[
                CatalogModel(
                    name=e.name,
                    size_bytes=e.size_bytes,
                    file_type=e.file_type,
                    mirrored=e.name in names,
                )
                for e in entries
            ],
        )

    @api.put("/models/{name}", status_code=201, response_model=Model, openapi_extra=UPLOAD_BODY)
    async def upload_model(
        name: str,
        request: Request,
        claims: Claims = operator,
        content_sha256: Annotated[
            str | None, Header(alias="X-Content-SHA256", pattern=r"^[0-9a-fA-F]{64}$")
        ] = None,
    ) -> Model:
        """Upload a GGUF as model ``name``: verified, stored, recorded (``models push``).

        The body is the raw file (``application/octet-stream``). With
        ``X-Content-SHA256`` (and Content-Length) the upload must match them.
        """
        return Model.of(
            await receive_model(
                name,
                request,
                store=deps.store,
                sessions=deps.sessions,
                work_dir=deps.settings.resolved_work_dir,
                uploader=claims.subject,
                expected_sha256=content_sha256,
                limits=UploadLimits(
                    deps.settings.max_upload_bytes,
                    deps.settings.upload_reserve_bytes,
                    deps.settings.upload_idle_seconds,
                ),
            )
        )

    @api.get("/models/available", response_model=list[CatalogModel], include_in_schema=False)
    async def models_available(claims: Claims = viewer) -> list[CatalogModel]:
        return (await models(claims)).catalog  # the old deployment's path

    return api
