"""The debugger's actions: fork a turn (with breakpoints), continue a fork, replay a conversation, export a golden test.

See ``docs/debugger-actions.md``. Every route is tenant-scoped: a conversation or fork of
another tenant is a 404, as if it did not exist. Nothing here sends anything to an end user.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Response, delete, get, post
from litestar.exceptions import NotFoundException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from litestar.types import ControllerRouterHandler

from botloom.core.domain import Bot, Conversation
from botloom.core.storage.repositories.forks import Fork
from botloom.runtime.debug_runs import MAX_BREAKPOINTS, DebugInputError, DebugNotFound
from botloom.runtime.forks import ForkNotPaused, ForkOutcome, Forks
from botloom.runtime.golden import export_golden_test
from botloom.runtime.replay import replay_conversation
from botloom.runtime.services import Services
from botloom.server.api.common import READ_ERRORS, WRITE_ERRORS, ApiController, ConflictException, IdRef
from botloom.server.api.conversations import visible_conversation
from botloom.server.api.schemas import ONE_LINE, VISIBLE_TEXT
from botloom.server.auth import Principal, visible_bot
from botloom.server.deps import PrincipalDep, ServicesDep

GOLDEN_RESPONSE = ResponseSpec(
    data_container=str,
    media_type="text/x-python",
    description="A pytest file (an attachment: Content-Disposition names it)",
    generate_examples=False,  # a random example would make the schema differ between two builds
)

MAX_TEXT = 4000
"""The longest message a fork runs (as REST chat's)."""

NodeName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=ONE_LINE)]
CheckpointRef = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=ONE_LINE)]
ForkText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT, pattern=VISIBLE_TEXT)]
BotName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=ONE_LINE)]
Breakpoints = Annotated[list[NodeName], msgspec.Meta(max_length=MAX_BREAKPOINTS)]


class ForkIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fork the turn of a checkpoint and run it on a thread of its own (never sent to the end user)."""

    checkpoint_id: CheckpointRef
    """A checkpoint of the turn to fork, as ``GET /conversations/{id}/checkpoints`` lists them."""
    text: ForkText | None = None
    """The user's message to run instead of the turn's own."""
    state: dict[str, Any] | None = None
    """Edits of the state the turn starts from (fields the turn's input does not reset, e.g. ``pending_intent``)."""
    break_before: Breakpoints = []
    """Nodes to pause before."""
    break_after: Breakpoints = []
    """Nodes to pause after."""


class ContinueIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Continue a paused fork, after editing its state (as the node that ran last)."""

    state: dict[str, Any] | None = None


class ReplayIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Replay a conversation's user messages against a bot's current graph, plugins and settings."""

    mode: Literal["deterministic", "live"] = "deterministic"
    """``deterministic``: recorded model and tool outputs are reused; ``live``: they are called again."""
    bot: BotName | None = None
    """Another bot of the conversation's tenant to replay against (its id or ``tenant-slug/bot-slug``)."""


class TurnOutcomeOut(msgspec.Struct, frozen=True, kw_only=True):
    """What a turn did."""

    replies: list[str]
    intent: str | None
    path: list[str] | None


class ForkOut(msgspec.Struct, frozen=True, kw_only=True):
    """A fork as it stands, beside the original turn."""

    fork_id: str
    conversation_id: str
    checkpoint_id: str
    """The original turn's checkpoint."""
    fork_checkpoint_id: str | None
    """The newest checkpoint of the fork's own thread."""
    replies: list[str]
    intent: str | None
    path: list[str]
    """The nodes the fork ran, in order."""
    paused_at: str | None
    """The node a breakpoint paused at; ``None`` when the fork ran to its end."""
    pause: Literal["before", "after"] | None
    next: list[str]
    escalated: bool
    state: dict[str, Any]
    original: dict[str, Any] | None
    """The original turn's ``replies``, ``intent``, ``path``, ``escalated`` (``None``: its checkpoint is gone)."""
    diff: dict[str, Any]
    """Each field that differs from the original turn: ``{"field": {"original": ..., "fork": ...}}``."""
    break_before: list[str]
    break_after: list[str]
    errors: list[str]

    @classmethod
    def of(cls, outcome: ForkOutcome) -> ForkOut:
        """The API form of a fork's outcome (the same fields, read from it)."""
        return msgspec.convert(outcome, cls, from_attributes=True)


class ForkSummaryOut(msgspec.Struct, frozen=True, kw_only=True):
    """A fork in a conversation's list of forks."""

    fork_id: str
    checkpoint_id: str
    edited: bool
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, fork: Fork) -> ForkSummaryOut:
        """The list's entry for a fork."""
        return cls(
            fork_id=fork.id,
            checkpoint_id=fork.checkpoint_id,
            edited=fork.edited,
            created_at=fork.created_at.isoformat(),
            updated_at=fork.updated_at.isoformat(),
        )


class ReplayTurnOut(msgspec.Struct, frozen=True, kw_only=True):
    """One turn of a replay: the original and the replayed outcome."""

    index: int
    input: str
    recorded: bool
    """Whether the original turn's checkpoint was found (else only its stored replies are compared)."""
    original: TurnOutcomeOut
    replayed: TurnOutcomeOut
    same: bool
    differs: list[str]
    """Which of ``replies``, ``intent``, ``path`` differ."""
    error: str | None = None


class ReplayOut(msgspec.Struct, frozen=True, kw_only=True):
    """A replay's answer."""

    conversation_id: str
    bot_id: str
    mode: Literal["deterministic", "live"]
    turns: list[ReplayTurnOut]
    differences: int
    """How many turns differ."""
    truncated: bool
    """The conversation had more turns than one replay runs (the first ones were replayed)."""


def _bad(exc: DebugInputError) -> ValidationException:
    return ValidationException(str(exc))


async def _conversation_bot(services: Services, principal: Principal, conversation_id: str) -> tuple[Bot, Conversation]:
    conversation = await visible_conversation(services, principal, conversation_id)
    bot = await services.store.bots.get(conversation.tenant_id, conversation.bot_id)
    if bot is None:
        raise NotFoundException(f"no conversation {conversation_id!r}")
    return bot, conversation


class ConversationDebugController(ApiController):
    """Forks, replays and golden tests of one conversation."""

    path = "/conversations/{conversation_id:str}"
    tags = ("debugger",)

    @post(
        "/forks",
        summary="Fork a turn and run it (never sent to the end user)",
        status_code=HTTP_201_CREATED,
        raises=WRITE_ERRORS,
    )
    async def create_fork(
        self, conversation_id: IdRef, data: JSONBody[ForkIn], principal: PrincipalDep, services: ServicesDep
    ) -> ForkOut:
        """Re-run the turn of ``checkpoint_id`` from the state before it, on a thread of its own.

        With ``text``, a different message; with ``state``, edits of the state the turn starts
        from; with ``break_before``/``break_after``, the run pauses at those nodes (``paused_at``)
        until ``POST /forks/{fork_id}/continue``. Nothing is delivered or stored in the conversation.
        """
        bot, conversation = await _conversation_bot(services, principal, conversation_id)
        try:
            outcome = await Forks(services).create(
                bot,
                conversation,
                data.checkpoint_id,
                text=data.text,
                state=data.state,
                break_before=data.break_before,
                break_after=data.break_after,
            )
        except DebugInputError as exc:
            raise _bad(exc) from None
        except DebugNotFound as exc:
            raise NotFoundException(str(exc)) from None
        return ForkOut.of(outcome)

    @get("/forks", summary="List a conversation's forks", raises=READ_ERRORS)
    async def list_forks(
        self,
        conversation_id: IdRef,
        principal: PrincipalDep,
        services: ServicesDep,
        limit: Annotated[int, QueryParameter(ge=1, le=200, description="How many forks at most")] = 50,
    ) -> list[ForkSummaryOut]:
        """The conversation's forks, newest first."""
        _, conversation = await _conversation_bot(services, principal, conversation_id)
        return [ForkSummaryOut.of(f) for f in await Forks(services).list_forks(conversation, limit)]

    @post(
        "/replay",
        summary="Replay a conversation against a bot's current logic",
        status_code=HTTP_200_OK,
        raises=WRITE_ERRORS,
    )
    async def replay(
        self, conversation_id: IdRef, data: JSONBody[ReplayIn], principal: PrincipalDep, services: ServicesDep
    ) -> ReplayOut:
        """Re-run the conversation's user messages in order on a throwaway thread and compare each turn.

        ``deterministic`` reuses the recorded knowledge passages, tool results and model outputs;
        ``live`` calls the model and the tools (with ``dry_run``) again. ``bot`` names another bot of
        the conversation's tenant to compare a new version.
        """
        bot, conversation = await _conversation_bot(services, principal, conversation_id)
        target = bot
        if data.bot is not None:
            target = await visible_bot(services, principal, data.bot)
            if target.tenant_id != conversation.tenant_id:
                raise NotFoundException(f"no bot {data.bot!r} in the conversation's tenant")
        try:
            report = await replay_conversation(services, bot, conversation, mode=data.mode, target=target)
        except DebugNotFound as exc:
            raise NotFoundException(str(exc)) from None
        return ReplayOut(
            conversation_id=report.conversation_id,
            bot_id=report.bot_id,
            mode=report.mode,
            turns=[msgspec.convert(t, ReplayTurnOut) for t in report.turns],
            differences=report.differences,
            truncated=report.truncated,
        )

    @get(
        "/golden-test",
        summary="Export the conversation (or a fork of it) as a pytest golden test",
        raises=WRITE_ERRORS,
        responses={200: GOLDEN_RESPONSE},
    )
    async def golden_test(
        self,
        conversation_id: IdRef,
        principal: PrincipalDep,
        services: ServicesDep,
        fork: Annotated[
            str | None, QueryParameter(max_length=200, pattern=ONE_LINE, description="A fork of it to export instead")
        ] = None,
    ) -> Response[str]:
        """A standalone pytest file replaying the conversation with its recorded outputs (``text/x-python``)."""
        bot, conversation = await _conversation_bot(services, principal, conversation_id)
        return await _golden(services, bot, conversation, fork)


async def _golden(services: Services, bot: Bot, conversation: Conversation, fork_id: str | None) -> Response[str]:
    try:
        source, name = await export_golden_test(services, bot, conversation, fork_id=fork_id)
    except (DebugInputError, ForkNotPaused) as exc:
        raise ValidationException(str(exc)) from None
    except DebugNotFound as exc:
        raise NotFoundException(str(exc)) from None
    disposition = f'attachment; filename="{name}"'
    return Response(source, media_type="text/x-python", headers={"Content-Disposition": disposition})


class ForkController(ApiController):
    """One fork, by id."""

    path = "/forks/{fork_id:str}"
    tags = ("debugger",)

    @get(summary="Get a fork", raises=READ_ERRORS)
    async def get_fork(self, fork_id: IdRef, principal: PrincipalDep, services: ServicesDep) -> ForkOut:
        """The fork as it stands: its replies, path, pause, state and diff against the original turn."""
        try:
            return ForkOut.of(await Forks(services).read(principal.tenant_id, fork_id))
        except DebugNotFound as exc:
            raise NotFoundException(str(exc)) from None

    @post(
        "/continue",
        summary="Continue a fork paused at a breakpoint",
        status_code=HTTP_200_OK,
        raises=[*WRITE_ERRORS, ConflictException],
    )
    async def continue_fork(
        self, fork_id: IdRef, data: JSONBody[ContinueIn], principal: PrincipalDep, services: ServicesDep
    ) -> ForkOut:
        """Apply ``state`` edits (as the node that ran last, so its edges are taken again) and run on."""
        try:
            return ForkOut.of(await Forks(services).continue_fork(principal.tenant_id, fork_id, state=data.state))
        except DebugInputError as exc:
            raise _bad(exc) from None
        except DebugNotFound as exc:
            raise NotFoundException(str(exc)) from None
        except ForkNotPaused as exc:
            raise ConflictException(str(exc)) from None

    @delete(summary="Delete a fork and its checkpoints", status_code=HTTP_204_NO_CONTENT, raises=READ_ERRORS)
    async def delete_fork(self, fork_id: IdRef, principal: PrincipalDep, services: ServicesDep) -> None:
        """Forget the fork and delete its thread's checkpoints."""
        try:
            await Forks(services).delete(principal.tenant_id, fork_id)
        except DebugNotFound as exc:
            raise NotFoundException(str(exc)) from None

    @get(
        "/golden-test",
        summary="Export a fork as a pytest golden test",
        raises=WRITE_ERRORS,
        responses={200: GOLDEN_RESPONSE},
    )
    async def fork_golden_test(self, fork_id: IdRef, principal: PrincipalDep, services: ServicesDep) -> Response[str]:
        """The conversation's turns before the forked one, then the fork's turn, as a golden test."""
        try:
            fork = await Forks(services).get_fork(principal.tenant_id, fork_id)
        except DebugNotFound as exc:
            raise NotFoundException(str(exc)) from None
        bot, conversation = await _conversation_bot(services, principal, fork.conversation_id)
        return await _golden(services, bot, conversation, fork.id)


DEBUG_ACTION_HANDLERS: list[ControllerRouterHandler] = [ConversationDebugController, ForkController]

__all__ = ["DEBUG_ACTION_HANDLERS", "ContinueIn", "ForkIn", "ForkOut", "ReplayIn", "ReplayOut"]
