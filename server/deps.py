"""Annotated dependency types for handlers: ``services: ServicesDep``, ``principal: PrincipalDep``."""

from __future__ import annotations

from litestar.di import NamedDependency

from botloom.runtime.services import Services
from botloom.server.auth import Principal

ServicesDep = NamedDependency[Services]
"""The process's open services (injected by name, ``services``)."""
PrincipalDep = NamedDependency[Principal]
"""The authenticated caller of an ``/api/v1`` route (injected by name, ``principal``)."""
