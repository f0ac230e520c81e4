"""End users' data: ``/api/v1/tenants/{tenant}/contacts``, export and erase everything stored about one contact.

A contact is one end user of the tenant on one channel, named by ``channel`` and
``address`` (see ``docs/data-rights.md``). The operator's token or the tenant's own
key; another tenant's key gets 404, as on every tenant route. Each export and erasure
is recorded in the audit log (``GET /api/v1/audit``, docs/audit.md; an erasure's row in
its transaction) and reported as an event of the tenant (``contact.exported``,
``contact.erased``: ``GET /api/v1/events``).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import delete, get
from litestar.enums import MediaType
from litestar.exceptions import ValidationException
from litestar.params import QueryParameter
from litestar.response import Stream
from litestar.types import ControllerRouterHandler

from botloom.core.domain import Tenant
from botloom.runtime.audit import record
from botloom.runtime.erasure import Contact, contact_conversations, erase_contact, export_contact, record_action
from botloom.runtime.services import Services
from botloom.server.api.audit import actor_of
from botloom.server.api.common import READ_ERRORS, ApiController, TenantRef, visible_tenant
from botloom.server.api.schemas import ONE_LINE
from botloom.server.auth import Principal
from botloom.server.deps import PrincipalDep, ServicesDep

MAX_CHANNEL = 64
MAX_ADDRESS = 500
ChannelQuery = Annotated[
    str,
    QueryParameter(
        description="The channel's name, as conversations record it (`twilio`, `email`, `rest`, `webchat`, ...)",
        min_length=1,
        max_length=MAX_CHANNEL,
        pattern=ONE_LINE,
    ),
]
AddressQuery = Annotated[
    str,
    QueryParameter(
        description="The end user's address on the channel: the sender (`+15550100`, `whatsapp:+15550100`, "
        "an e-mail address, a REST or web chat `user`), or a REST or web chat conversation's id. Written as the "
        "channel stores it or not: an e-mail address in any case, a number with spaces or dashes. The anonymous "
        "senders (`rest-user`, `web-user`, `langgraph-user`) name no one: use the conversation's id",
        min_length=1,
        max_length=MAX_ADDRESS,
        pattern=ONE_LINE,
    ),
]
ERRORS = [*READ_ERRORS, ValidationException]


class ErasureOut(msgspec.Struct, frozen=True, kw_only=True):
    """What an erasure removed (zeros when there was nothing left to erase)."""

    conversations: int
    checkpoint_threads: int
    """Conversation checkpoint threads deleted (each with every checkpoint of the conversation)."""
    messages: int
    """Messages of either direction, the agents' included."""
    dead_letters: int
    """Of those, replies that were never delivered."""
    delivery_parts: int
    send_attempts: int
    handovers: int
    handover_notes: int
    handover_transitions: int
    events: int
    """Events of the conversations (their pending webhook deliveries went with them)."""
    webhook_deliveries: int
    forks: int
    """Debug forks deleted with their checkpoint threads."""
    usage_unlinked: int
    """Usage rows kept for billing (model, tokens, time) but no longer linked to a conversation."""


def actor(principal: Principal) -> str:
    """Who asked, as an audit event records it: ``operator`` or ``api_key:{id}``."""
    return "operator" if principal.is_operator else f"api_key:{principal.key_id}"


async def contact_of(
    services: Services, principal: Principal, tenant: str, channel: str, address: str
) -> tuple[Tenant, Contact]:
    """The tenant the caller may see (404 otherwise) and the contact, its address as the channel stores it.

    The channel writes the address its own way (an e-mail address in lower case:
    ``ChannelAdapter.contact_address``); its anonymous sender names no one
    (``ChannelAdapter.anonymous_sender``). A channel no plugin serves any more keeps the address as given.
    """
    found = await visible_tenant(services, principal, tenant)
    adapter = services.host.registry.channels.get(channel)
    if adapter is None:
        return found, Contact(channel=channel, address=address)
    return found, Contact(channel=channel, address=adapter.contact_address(address), anonymous=adapter.anonymous_sender)


class ContactController(ApiController):
    """One end user's data: export and erasure."""

    path = "/tenants/{tenant:str}/contacts"
    tags = ("contacts",)

    @get(
        "/export",
        summary="Export everything stored about one end user",
        description=(
            "Everything botloom stores about the contact as one JSON document: each conversation with its "
            "messages (with their delivery parts and attempts), handovers (with transitions and agents' notes), "
            "events, usage rows, a summary of its LangGraph checkpoints (the newest state and every run) and its "
            "debug forks (with theirs). The document is streamed as it is read, never held whole in memory; its "
            'last key is `"complete": true`, so a transfer cut short is invalid JSON, not a shorter export. '
            "A contact with nothing stored gets an empty `conversations` list. The export is recorded as a "
            "`contact.exported` event of the tenant (without the address)."
        ),
        response_description="The export document (application/json, streamed)",
        raises=ERRORS,
    )
    async def export(
        self,
        tenant: TenantRef,
        channel: ChannelQuery,
        address: AddressQuery,
        principal: PrincipalDep,
        services: ServicesDep,
    ) -> Stream:
        """Stream the contact's export document."""
        found, contact = await contact_of(services, principal, tenant, channel, address)
        conversations = await contact_conversations(services, found.id, contact)
        await record(
            services,
            actor_of(principal),
            "contact.exported",
            tenant_id=found.id,
            target=("contact", None),
            details={"channel": channel, "conversations": len(conversations)},
        )
        await record_action(
            services,
            found.id,
            "contact.exported",
            by=actor(principal),
            channel=channel,
            data={"conversations": len(conversations)},
        )
        return Stream(
            export_contact(services, found, contact, conversations),
            media_type=MediaType.JSON,
            headers={"Content-Disposition": 'attachment; filename="contact-export.json"', "Cache-Control": "no-store"},
        )

    @delete(
        "/",
        status_code=200,
        summary="Erase everything stored about one end user",
        description=(
            "Erases the contact's conversations with their messages (dead letters included), delivery records, "
            "handovers with their notes and transitions, events, debug forks, and every LangGraph checkpoint "
            "thread of those conversations and forks (PostgreSQL or Redis). Usage rows stay for billing, with "
            "their counts (model, tokens, time) but no link to a conversation. Each conversation is erased while "
            "holding its lock: a turn running for the contact finishes first, and none runs after. Idempotent: "
            "a repeated call answers zeros. Recorded as a `contact.erased` event of the tenant with the counts "
            "(without the address)."
        ),
        raises=ERRORS,
    )
    async def erase(
        self,
        tenant: TenantRef,
        channel: ChannelQuery,
        address: AddressQuery,
        principal: PrincipalDep,
        services: ServicesDep,
    ) -> ErasureOut:
        """Erase the contact; what was erased."""
        found, contact = await contact_of(services, principal, tenant, channel, address)
        report = await erase_contact(services, found.id, contact, actor=actor_of(principal))
        counts = report.as_dict()
        await record_action(services, found.id, "contact.erased", by=actor(principal), channel=channel, data=counts)
        return msgspec.convert(counts, ErasureOut)


CONTACT_HANDLERS: list[ControllerRouterHandler] = [ContactController]

__all__ = ["CONTACT_HANDLERS", "ContactController", "ErasureOut"]
