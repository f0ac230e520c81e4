"""Teaching a bot (#17): its synonyms, extra examples per intent, and the questions it could not answer.

* ``GET/PUT /api/v1/bots/{bot}/synonyms``: phrase → the words it means
  (``{"synonyms": {"hoodie": "sweater", "amex": "american express"}}``);
* ``GET/POST /api/v1/bots/{bot}/intents/{intent}/examples``, ``DELETE .../examples/{id}``:
  extra example messages of one of the bot's enabled intents;
* ``GET /api/v1/bots/{bot}/fallbacks?from=&to=``: what the bot could not answer,
  similar questions grouped, commonest first: what to teach next;
* ``POST /api/v1/bots/{bot}/teaching/preview``: which of the bot's recent answers a change
  of its synonyms or examples would change, before it is made (nothing is stored or sent).

The offline engine uses what is taught from the bot's next turn on.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import delete, get, post, put
from litestar.exceptions import ClientException, NotFoundException, ValidationException
from litestar.params import JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_409_CONFLICT

from botloom.core.storage.repositories import as_uuid
from botloom.core.storage.repositories.teaching import (
    MAX_EXAMPLES,
    MAX_SYNONYMS,
    FallbackGroup,
    IntentExample,
    TooMany,
)
from botloom.runtime.audit import record
from botloom.runtime.debug_runs import DebugNotFound
from botloom.runtime.services import Services
from botloom.runtime.teaching_preview import MAX_PREVIEW_CONVERSATIONS, preview_teaching
from botloom.server.api.audit import actor_of
from botloom.server.api.common import READ_ERRORS, WRITE_ERRORS, ApiController, BotRef, IdRef, NameRef
from botloom.server.api.schemas import ONE_LINE, Request
from botloom.server.auth import Principal, visible_bot
from botloom.server.deps import PrincipalDep, ServicesDep

Phrase = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=ONE_LINE)]
"""A synonym's phrase or its meaning: one line, at most 100 characters."""
ExampleText = Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=ONE_LINE)]
"""An example message: one line, at most 500 characters."""
MAX_PER_INTENT = msgspec.Meta(max_length=MAX_EXAMPLES)
"""A preview adds at most as many examples to one intent as an intent may have."""


class SynonymsBody(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A bot's synonyms: each phrase (``send back``) and the words it means (``return``)."""

    synonyms: Annotated[dict[Phrase, Phrase], msgspec.Meta(max_length=MAX_SYNONYMS)]


class ExampleIn(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An example message for one of the bot's intents."""

    text: ExampleText


class ExampleOut(msgspec.Struct, frozen=True, kw_only=True):
    """A taught example."""

    id: str
    intent: str
    text: str
    created_at: datetime


class TooManyExamples(ClientException):
    """The proposal would give an intent more taught examples than it may have (so it could not be applied)."""

    status_code = HTTP_409_CONFLICT


class PreviewIn(Request, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A proposed teaching change: new synonyms (replacing the bot's), examples to add, how much to replay."""

    synonyms: Annotated[dict[Phrase, Phrase], msgspec.Meta(max_length=MAX_SYNONYMS)] | None = None
    """The bot's synonyms after the change, as ``PUT .../synonyms`` would set them (none: unchanged)."""
    examples: Annotated[
        dict[Annotated[str, msgspec.Meta(min_length=1, max_length=100)], Annotated[list[ExampleText], MAX_PER_INTENT]],
        msgspec.Meta(max_length=50),
    ] = msgspec.field(default_factory=dict)
    """Intent name → example messages to add."""
    conversations: Annotated[int, msgspec.Meta(ge=1, le=MAX_PREVIEW_CONVERSATIONS)] = MAX_PREVIEW_CONVERSATIONS
    """How many of the bot's most recently active conversations to replay."""


class AnswerOut(msgspec.Struct, frozen=True, kw_only=True):
    """What the bot answered a message: its intent (``knowledge`` for a passage, none for the fallback), its replies."""

    intent: str | None
    replies: list[str]
    tools_not_run: list[str]
    """Tools the answer would call that a preview does not run (the original turn has no result of them): the
    replies are then what the bot says when a tool fails."""


class ChangedOut(msgspec.Struct, frozen=True, kw_only=True):
    """A recent message whose answer the change would change."""

    conversation_id: str
    turn: int
    message: str
    before: AnswerOut
    after: AnswerOut


class PreviewOut(msgspec.Struct, frozen=True, kw_only=True):
    """How much was replayed, and the answers the change would change."""

    conversations: int
    turns: int
    truncated: bool
    changed: list[ChangedOut]


class FallbackOut(msgspec.Struct, frozen=True, kw_only=True):
    """Similar questions the bot could not answer."""

    question: str
    """The latest wording."""
    count: int
    last_seen: datetime
    variants: list[str]


def _example(example: IntentExample) -> ExampleOut:
    return ExampleOut(id=example.id, intent=example.intent, text=example.text, created_at=example.created_at)


async def _intent(services: Services, principal: Principal, bot: str, intent: str) -> tuple[str, str]:
    """The tenant and bot ids, if the caller sees the bot and it has ``intent`` enabled; 404 otherwise."""
    found = await visible_bot(services, principal, bot)
    view = await services.runner.bot_view(found)
    if intent not in view.intents:
        raise NotFoundException(f"the bot has no intent {intent!r} (intents come from its enabled plugins)")
    return found.tenant_id, found.id


def _answer(outcome: Mapping[str, Any]) -> AnswerOut:
    return AnswerOut(
        intent=outcome.get("intent"),
        replies=[str(r) for r in outcome.get("replies") or []],
        tools_not_run=[str(t) for t in outcome.get("tools_not_run") or []],
    )


TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$"
"""An ISO 8601 time with its zone (``2026-01-31T00:00:00Z``): a bare number or a local time is refused."""
DATE_TIME = {"format": "date-time"}
"""The schema says so too: a string of the pattern that is no real time (month 13) is a 400."""


def timestamp(value: str | None, name: str) -> datetime | None:
    """``value`` as an aware datetime; 400 naming the parameter when it is no real time."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationException(f"'{name}' is not a valid time: {value!r}") from None


def _blank(value: str) -> bool:
    return not value.strip()


def _cleaned(synonyms: Mapping[str, str]) -> dict[str, str]:
    """``synonyms`` in lower case with single spaces; 400 when a phrase or meaning has no visible text."""
    cleaned = {" ".join(k.lower().split()): " ".join(v.lower().split()) for k, v in synonyms.items()}
    if any(_blank(k) or _blank(v) for k, v in cleaned.items()):
        raise ValidationException("a synonym and its meaning must have visible text")
    return cleaned


class TeachingController(ApiController):
    """What a bot is taught, and what it could not answer."""

    path = "/bots/{bot:str}"
    tags = ("teaching",)

    @get("/synonyms", summary="A bot's synonyms", raises=READ_ERRORS)
    async def get_synonyms(self, bot: BotRef, principal: PrincipalDep, services: ServicesDep) -> SynonymsBody:
        """The phrases the offline engine reads as other words for this bot."""
        found = await visible_bot(services, principal, bot)
        return SynonymsBody(synonyms=await services.store.teaching.synonyms(found.tenant_id, found.id))

    @put("/synonyms", summary="Replace a bot's synonyms", raises=WRITE_ERRORS)
    async def put_synonyms(
        self, bot: BotRef, data: JSONBody[SynonymsBody], principal: PrincipalDep, services: ServicesDep
    ) -> SynonymsBody:
        """Replace the bot's synonyms (phrase → the words it means); used from the bot's next turn on."""
        found = await visible_bot(services, principal, bot)
        cleaned = _cleaned(data.synonyms)
        async with services.store.db.transaction():
            if not await services.store.teaching.put_synonyms(found.tenant_id, found.id, cleaned):
                raise NotFoundException("the bot was deleted")
            await record(
                services,
                actor_of(principal),
                "synonyms.updated",
                tenant_id=found.tenant_id,
                target=("bot", found.id),
                details={"synonyms": len(cleaned)},
            )
        return SynonymsBody(synonyms=cleaned)

    @get("/intents/{intent:str}/examples", summary="Examples taught to an intent", raises=READ_ERRORS)
    async def list_examples(
        self, bot: BotRef, intent: NameRef, principal: PrincipalDep, services: ServicesDep
    ) -> list[ExampleOut]:
        """The examples taught to one of the bot's intents (its plugin's own examples are not listed)."""
        tenant, bot_id = await _intent(services, principal, bot, intent)
        return [_example(e) for e in await services.store.teaching.examples(tenant, bot_id, intent)]

    @post(
        "/intents/{intent:str}/examples",
        summary="Teach an intent an example",
        raises=WRITE_ERRORS,
        status_code=HTTP_201_CREATED,
    )
    async def add_example(
        self, bot: BotRef, intent: NameRef, data: JSONBody[ExampleIn], principal: PrincipalDep, services: ServicesDep
    ) -> ExampleOut:
        """Add an example message to one of the bot's intents; used from the bot's next turn on."""
        tenant, bot_id = await _intent(services, principal, bot, intent)
        text = " ".join(data.text.split())
        if not text:
            raise ValidationException("an example must have visible text")
        teaching = services.store.teaching
        try:
            async with services.store.db.transaction():
                known = {e.id for e in await teaching.examples(tenant, bot_id, intent)}
                example = await teaching.add_example(tenant, bot_id, intent, text)
                if example is None:
                    raise NotFoundException("the bot was deleted")
                if example.id not in known:  # the same text again changes nothing: no row
                    # The intent, never the text: an example is often an end user's question.
                    await record(
                        services,
                        actor_of(principal),
                        "intent_example.created",
                        tenant_id=tenant,
                        target=("intent_example", example.id),
                        details={"bot_id": bot_id, "intent": intent},
                    )
        except TooMany:
            raise ValidationException(f"an intent may have at most {MAX_EXAMPLES} taught examples") from None
        return _example(example)

    @delete("/intents/{intent:str}/examples/{example:str}", summary="Forget a taught example", raises=READ_ERRORS)
    async def delete_example(
        self, bot: BotRef, intent: NameRef, example: IdRef, principal: PrincipalDep, services: ServicesDep
    ) -> None:
        """Remove a taught example by its id."""
        found = await visible_bot(services, principal, bot)
        async with services.store.db.transaction():
            if not await services.store.teaching.delete_example(found.tenant_id, found.id, intent, example):
                raise NotFoundException(f"no example {example!r} of intent {intent!r}")
            await record(
                services,
                actor_of(principal),
                "intent_example.deleted",
                tenant_id=found.tenant_id,
                target=("intent_example", str(as_uuid(example))),
                details={"bot_id": found.id, "intent": intent},
            )

    @get("/fallbacks", summary="Questions the bot could not answer", raises=WRITE_ERRORS)
    async def fallbacks(
        self,
        *,
        bot: BotRef,
        principal: PrincipalDep,
        services: ServicesDep,
        since: Annotated[
            str | None,
            QueryParameter(
                name="from", pattern=TIMESTAMP, schema_extra=DATE_TIME, description="From this time on (ISO 8601)"
            ),
        ] = None,
        until: Annotated[
            str | None,
            QueryParameter(
                name="to", pattern=TIMESTAMP, schema_extra=DATE_TIME, description="Before this time (ISO 8601)"
            ),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200, description="How many groups at most")] = 50,
    ) -> list[FallbackOut]:
        """What end users asked that the bot had no answer for, similar questions grouped: what to teach next."""
        found = await visible_bot(services, principal, bot)
        start, end = timestamp(since, "from"), timestamp(until, "to")
        if start is not None and end is not None and start >= end:
            return []  # an empty period holds no fallbacks
        groups: list[FallbackGroup] = await services.store.teaching.fallbacks(
            found.tenant_id, found.id, start, end, limit
        )
        return [
            FallbackOut(question=g.question, count=g.count, last_seen=g.last_seen, variants=g.variants) for g in groups
        ]

    @post(
        "/teaching/preview",
        summary="Preview a teaching change on recent conversations",
        raises=[*WRITE_ERRORS, TooManyExamples],
        status_code=HTTP_200_OK,
    )
    async def preview(
        self, bot: BotRef, data: JSONBody[PreviewIn], principal: PrincipalDep, services: ServicesDep
    ) -> PreviewOut:
        """Which of the bot's recent answers the proposed synonyms and examples would change; nothing is stored.

        The user messages of the bot's most recently active conversations are replayed with what the bot is
        taught now and with the proposal (the offline engine, the knowledge base as it is now, tools from
        their recorded results); the messages whose answer differs are listed, before and after.
        """
        found = await visible_bot(services, principal, bot)
        view = await services.runner.bot_view(found)
        unknown = sorted(set(data.examples) - set(view.intents))
        if unknown:
            raise NotFoundException(f"the bot has no intent {unknown[0]!r} (intents come from its enabled plugins)")
        synonyms = None if data.synonyms is None else _cleaned(data.synonyms)
        examples = {name: [" ".join(t.split()) for t in texts] for name, texts in data.examples.items()}
        if any(_blank(t) for texts in examples.values() for t in texts):
            raise ValidationException("an example must have visible text")
        taught = await services.store.teaching.load(found.tenant_id, found.id)
        for name, texts in examples.items():
            if len(set(taught.examples.get(name, ())) | set(texts)) > MAX_EXAMPLES:
                raise TooManyExamples(
                    f"intent {name!r} would have more than {MAX_EXAMPLES} taught examples: forget some first"
                )
        try:
            report = await preview_teaching(
                services, found, synonyms=synonyms, examples=examples, conversations=data.conversations
            )
        except DebugNotFound as exc:  # the bot's graph is no longer registered
            raise NotFoundException(str(exc)) from None
        return PreviewOut(
            conversations=report.conversations,
            turns=report.turns,
            truncated=report.truncated,
            changed=[
                ChangedOut(
                    conversation_id=c.conversation_id,
                    turn=c.turn,
                    message=c.message,
                    before=_answer(c.before),
                    after=_answer(c.after),
                )
                for c in report.changed
            ],
        )


TEACHING_HANDLERS = [TeachingController]

__all__ = ["MAX_SYNONYMS", "TEACHING_HANDLERS", "TeachingController"]
