"""Routes without API keys: health, readiness, metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins.prometheus import PrometheusController
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from botloom.server.deps import ServicesDep
from botloom.server.errors import RETRY_AFTER_SECONDS


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """Whether the process, and the services it depends on, answer."""

    status: str
    checks: dict[str, bool] = {}


@get("/health", summary="The process is up", tags=["operations"], sync_to_thread=False)
def health() -> Health:
    """Answers 200 as long as the process serves requests."""
    return Health(status="ok")


@get(
    "/ready",
    summary="The process can serve turns",
    tags=["operations"],
    responses={
        HTTP_503_SERVICE_UNAVAILABLE: ResponseSpec(
            data_container=Health, description="The database or Redis does not answer (with Retry-After)"
        )
    },
)
async def ready(services: ServicesDep) -> Response[Health]:
    """200 when the database (and Redis, when configured) answer; 503 otherwise."""
    checks = {"database": await services.db.ping()}
    if services.redis is not None:
        try:
            async with asyncio.timeout(2):  # a server gone without closing its connections never answers
                checks["redis"] = bool(await services.redis.ping())
        except Exception:  # noqa: BLE001
            checks["redis"] = False
    ok = all(checks.values())
    return Response(
        Health(status="ok" if ok else "unavailable", checks=checks),
        status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE,
        headers={} if ok else {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class Metrics(PrometheusController):
    """``GET /metrics`` in the Prometheus text format."""

    path = "/metrics"
    include_in_schema = False


PUBLIC_HANDLERS: list[Any] = [health, ready, Metrics]
