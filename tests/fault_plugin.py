"""The plugin the fault campaign's ``botloom`` processes load: a turn that takes a while and says when it runs.

``parcel P<n>`` is answered ``Parcel <n> is in the depot.`` after its tool slept
``FAULTS_TURN_SECONDS``, so a worker killed in the middle of a turn is killed while
the turn runs. The tool appends ``{"event": "start"|"end", "number", "pid", "at"}``
lines to ``FAULTS_TURN_LOG`` (``at`` is ``time.monotonic()``, one clock for every
process of a Linux machine), so the campaign knows which process runs which turn.

The processes find it through an entry point of the ``botloom`` group that
:mod:`tests.faults` declares in a ``.dist-info`` directory on their ``PYTHONPATH``:
they are the real ``botloom serve`` and ``botloom worker`` commands with one more
plugin installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from botloom import Intent, Tool, hookimpl
from tests.parcels import ANSWER, PARCEL


def _log(event: str, number: str) -> None:
    path = os.environ.get("FAULTS_TURN_LOG")
    if path:
        line = json.dumps({"event": event, "number": number, "pid": os.getpid(), "at": time.monotonic()})
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


async def parcel_status(number: str) -> dict[str, str]:
    """Look a parcel up, slowly (``FAULTS_TURN_SECONDS``)."""
    _log("start", number)
    await asyncio.sleep(float(os.environ.get("FAULTS_TURN_SECONDS", "0")))
    _log("end", number)
    return {"reply": ANSWER.format(number=number)}


class FaultProbe:
    """The ``parcel`` intent and its slow tool."""

    @hookimpl
    def register_tools(self) -> list[Tool]:
        """The ``parcel_status`` tool."""
        return [Tool.from_function(parcel_status, timeout=120)]

    @hookimpl
    def register_intents(self) -> list[Intent]:
        """The ``parcel`` intent: ``parcel P<n>``."""
        return [PARCEL]


PLUGIN = FaultProbe()
"""The plugin object the entry point names (``fault_probe = tests.fault_plugin:PLUGIN``)."""
