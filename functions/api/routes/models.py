"""Models: what is mirrored, what the catalog offers, and uploads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request

from modelserve.functions.api.deps import ApiDeps
from modelserve.functions.api.schemas import CatalogModel, Model, Models
from modelserve.functions.api.upload import UPLOAD_BODY, UploadLimits, receive_model
from modelserve.functions.catalog.base import CatalogError, ModelNotInCatalog
from modelserve.functions.ingest import IngestError, check_model_name
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

        A name the upstream catalog offers cannot be claimed by an upload (409),
        mirrored yet or not: everyone who serves that name later must get the
        catalog's file, not the first uploader's. When the catalog cannot be
        asked the upload is refused (503): the rule fails closed.
        """
        try:
            check_model_name(name)  # a bad name gets its 422 below and never goes out
            await deps.catalog.sign(name)
        except (IngestError, ModelNotInCatalog):
            pass
        except CatalogError as exc:
            raise HTTPException(
                503, f"the catalog cannot be asked whether {name!r} is its: {exc}"
            ) from None
        else:
            raise HTTPException(
                409, f"{name!r} is a catalog model: serve it by name, or upload under another"
            )
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
