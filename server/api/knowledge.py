"""``/api/v1/bots/{bot}/knowledge``: a bot's documents, and what its knowledge search finds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated

import msgspec
from litestar import delete, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import NotFoundException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.params import JSONBody, MultipartBody, QueryParameter

from botloom.core.domain import Bot
from botloom.core.knowledge import IngestError, UnknownBot
from botloom.core.knowledge.parsing import DEFAULT_MAX_BYTES
from botloom.runtime.audit import record
from botloom.runtime.services import Services
from botloom.server.api.audit import actor_of
from botloom.server.api.common import READ_ERRORS, WRITE_ERRORS, ApiController, BotRef, NameRef
from botloom.server.api.schemas import NO_NUL, DocumentIn, DocumentOut, IngestOut, PassageOut, SearchOut
from botloom.server.auth import Principal, visible_bot
from botloom.server.deps import PrincipalDep, ServicesDep

UPLOAD_MAX_BODY = 2 * DEFAULT_MAX_BYTES + 65_536
"""The request size limit of the document routes: a document at the knowledge base's limit, JSON-escaped."""


@dataclass
class DocumentUpload:
    """A document file sent as ``multipart/form-data``."""

    file: UploadFile
    """The file; its name (``returns.md``) names the document and its extension tells the format."""


UPLOAD_ERRORS = [*WRITE_ERRORS, RequestEntityTooLarge]


async def ingest(services: Services, bot: Bot, name: str, content: bytes | str, content_type: str | None) -> IngestOut:
    """Store a document: 413 when it is over the knowledge base's limit, 400 for a file it cannot read."""
    limit: int = getattr(services.knowledge, "max_bytes", DEFAULT_MAX_BYTES)
    size = len(content.encode("utf-8", "surrogatepass")) if isinstance(content, str) else len(content)
    if size > limit:
        raise RequestEntityTooLarge(f"{name}: the document is {size:,} bytes; the limit is {limit:,} bytes")
    try:
        result = await services.knowledge.ingest(bot.tenant_id, bot.id, name, content, content_type=content_type)
    except IngestError as exc:
        raise ValidationException(str(exc)) from None
    except UnknownBot:
        raise NotFoundException("the bot was deleted") from None
    return IngestOut(document_id=result.document_id, name=result.name, status=result.status, chunks=result.chunks)


async def recorded(services: Services, principal: Principal, bot: Bot, result: IngestOut) -> IngestOut:
    """``result`` after its ``knowledge.ingested`` audit row (written after the ingestion: docs/audit.md)."""
    await record(
        services,
        actor_of(principal),
        "knowledge.ingested",
        tenant_id=bot.tenant_id,
        target=("document", result.document_id),
        details={"bot_id": bot.id, "name": result.name, "status": result.status, "chunks": result.chunks},
    )
    return result


class KnowledgeController(ApiController):
    """The knowledge base of one bot."""

    path = "/bots/{bot:str}/knowledge"
    tags = ("knowledge",)

    @post(summary="Add or replace a document", raises=UPLOAD_ERRORS, request_max_body_size=UPLOAD_MAX_BODY)
    async def add_document(
        self, bot: BotRef, data: JSONBody[DocumentIn], principal: PrincipalDep, services: ServicesDep
    ) -> IngestOut:
        """Ingest a Markdown, text, HTML or CSV document sent as JSON; one of the same name is replaced."""
        found = await visible_bot(services, principal, bot)
        return await recorded(
            services, principal, found, await ingest(services, found, data.name, data.content, data.content_type)
        )

    @post(
        "/files",
        summary="Upload a document file",
        raises=UPLOAD_ERRORS,
        request_max_body_size=UPLOAD_MAX_BODY,
    )
    async def upload_document(
        self,
        bot: BotRef,
        data: MultipartBody[DocumentUpload],
        principal: PrincipalDep,
        services: ServicesDep,
    ) -> IngestOut:
        """Ingest a file sent as ``multipart/form-data`` (field ``file``); the file's name names the document."""
        found = await visible_bot(services, principal, bot)
        upload = data.file
        name = upload.filename or ""
        # The extension tells the format; browsers send odd types (a .csv as application/vnd.ms-excel).
        content_type = None if PurePosixPath(name).suffix else upload.content_type
        return await recorded(
            services, principal, found, await ingest(services, found, name, await upload.read(), content_type)
        )

    @get(summary="List documents", raises=READ_ERRORS)
    async def list_documents(self, bot: BotRef, principal: PrincipalDep, services: ServicesDep) -> list[DocumentOut]:
        """The bot's documents, by name."""
        found = await visible_bot(services, principal, bot)
        documents = await services.knowledge.list_documents(found.tenant_id, found.id)
        return [msgspec.convert(d, DocumentOut, from_attributes=True) for d in documents]

    @delete("/{document:str}", summary="Delete a document", raises=READ_ERRORS)
    async def delete_document(
        self, bot: BotRef, document: NameRef, principal: PrincipalDep, services: ServicesDep
    ) -> None:
        """Delete a document, named by its id or its name, with its passages."""
        found = await visible_bot(services, principal, bot)
        if not await services.knowledge.delete(found.tenant_id, found.id, document):
            raise NotFoundException(f"no document {document!r}")
        # After the deletion, not in its transaction: the knowledge base may live in Redis (docs/audit.md).
        await record(
            services,
            actor_of(principal),
            "knowledge.deleted",
            tenant_id=found.tenant_id,
            target=("document", document),
            details={"bot_id": found.id},
        )

    @get("/search", summary="Search the knowledge base", raises=WRITE_ERRORS)
    async def search(
        self,
        *,
        bot: BotRef,
        principal: PrincipalDep,
        services: ServicesDep,
        q: Annotated[
            str, QueryParameter(min_length=1, max_length=2000, pattern=NO_NUL, description="What an end user might ask")
        ],
        limit: Annotated[int, QueryParameter(ge=1, le=50, description="How many passages at most")] = 5,
        threshold: Annotated[
            float | None,
            QueryParameter(
                ge=0,
                le=1,
                schema_extra={"minimum": 0},  # Litestar drops a bound of 0 from the schema
                description="Minimum score; default: the bot's knowledge_threshold",
            ),
        ] = None,
    ) -> SearchOut:
        """The passages the bot would retrieve for ``q``, best first, with their scores."""
        found = await visible_bot(services, principal, bot)
        minimum = threshold if threshold is not None else (found.settings.knowledge_threshold or None)
        passages = await services.knowledge.search(found.tenant_id, found.id, q, limit=limit, threshold=minimum)
        return SearchOut(
            query=q,
            threshold=minimum,
            passages=[msgspec.convert(p, PassageOut, from_attributes=True) for p in passages],
        )
