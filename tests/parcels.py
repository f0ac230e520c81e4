"""The ``parcel`` intent of the slow-turn test plugins: ``parcel P<n>``, answered by their ``parcel_status`` tool.

Each plugin (:mod:`tests.turn_process`, :mod:`tests.fault_plugin`, the gate of
``tests/test_turn_outages.py``) brings its own ``parcel_status`` tool: slow, logged or
held by the test; the intent that calls it and the answer's wording are the same.
"""

from __future__ import annotations

from botloom import Intent, Slot

ANSWER = "Parcel {number} is in the depot."
"""What ``parcel_status`` answers for parcel ``P<number>``."""

PARCEL = Intent(
    name="parcel",
    description="parcel lookup",
    examples=("parcel", "where is parcel", "parcel status"),
    slots=(Slot(name="number", pattern=r"P(\d+)", required=True),),
    tools=("parcel_status",),
)
"""``parcel P<n>``: looks parcel ``n`` up with the plugin's ``parcel_status`` tool."""
