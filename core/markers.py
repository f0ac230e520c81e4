"""The pluggy markers of the ``botloom`` project.

Plugins mark their hook implementations with :data:`hookimpl`, re-exported as
``botloom.hookimpl``::

    from botloom import hookimpl

    @hookimpl
    def register_tools():
        return [Tool.from_function(lookup_order)]
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "botloom"
"""The pluggy project name, which is also the entry-point group plugins declare."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
