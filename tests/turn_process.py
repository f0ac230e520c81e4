"""A botloom process for the multi-process tests: runs one turn (or the pending ones) and prints the result.

Usage: ``python -m tests.turn_process DATABASE_URL DATA_DIR BOT CONVERSATION [TEXT]``.
With no TEXT it processes the conversation's pending messages. The ``slowpoke``
plugin's ``parcel`` intent sleeps ``SLOWPOKE_SECONDS`` in its tool and appends
its start and end times to ``SLOWPOKE_LOG``, so tests can crash a process in the
middle of a turn and check that turns never overlap.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from botloom import Intent, Tool, hookimpl
from botloom.core.messages import InboundMessage
from botloom.core.settings import load_settings
from botloom.runtime.services import open_services
from tests.helpers import host_with
from tests.parcels import ANSWER, PARCEL


async def parcel_status(number: str) -> dict[str, str]:
    """Look a parcel up, slowly."""
    began = time.time()
    await asyncio.sleep(float(os.environ.get("SLOWPOKE_SECONDS", "0")))
    log = os.environ.get("SLOWPOKE_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"number": number, "start": began, "end": time.time(), "pid": os.getpid()}) + "\n")
    return {"reply": ANSWER.format(number=number)}


class Slowpoke:
    @hookimpl
    def register_tools(self) -> list[Tool]:
        return [Tool.from_function(parcel_status, timeout=120)]

    @hookimpl
    def register_intents(self) -> list[Intent]:
        return [PARCEL]


async def main(database_url: str, data_dir: str, bot_ref: str, conversation_id: str, text: str | None) -> None:
    settings = load_settings(environ={}, data_dir=data_dir, secret_key="k", turn_timeout=120, tool_timeout=120)
    async with open_services(settings, url=database_url, host=host_with(("slowpoke", Slowpoke()))) as services:
        bot = await services.store.bots.find(bot_ref)
        assert bot is not None
        print("ready", flush=True)
        if text is None:
            results = await services.runner.process(bot, conversation_id)
        else:
            message = InboundMessage(channel="test", text=text, sender="user-1")
            results = [await services.inbound.answer(bot, message, conversation_id=conversation_id)]
        for result in results:
            print(
                json.dumps({"message_id": result.message_id, "replies": [r.text for r in result.replies]}), flush=True
            )


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5], sys.argv[5] if len(sys.argv) > 5 else None))


SLOWPOKE = Slowpoke()
"""The plugin object, for an entry point (``slowpoke = tests.turn_process:SLOWPOKE``)."""
