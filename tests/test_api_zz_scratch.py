import json
import pytest
from litestar.testing import AsyncTestClient
from botloom.server.app import create_app
from tests.conftest import ADMIN_TOKEN


H = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

async def test_scratch(settings, services, demo):
    import httpx
    app = create_app(settings, services=services, debug=True)
    async with app.lifespan(), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        k = {"Authorization": f"Bearer {demo.api_key}"}
        r = await c.post("/api/v1/bots/acme/support/messages", headers=k, json={"text": "where is my order 1234?"})
        print(r.status_code, r.text[-3000:])
        conv = r.json()["conversation_id"]
        r = await c.post("/api/v1/bots/acme/support/messages", headers=k, json={"text": "agent please", "conversation_id": conv})
        print(r.status_code, r.text[:300])
        for method, path, kw in [
            ("POST", "/api/v1/tenants", {"content": b"{not json", "headers": {"content-type": "application/json", "Authorization": ""}}),
            ("GET", f"/api/v1/conversations/{conv}", {}),
            ("GET", f"/api/v1/conversations/{conv}/checkpoints?limit=3", {}),
            ("GET", "/api/v1/bots/acme/support/conversations", {}),
            ("GET", "/api/v1/bots/acme/support/knowledge", {}),
            ("GET", "/api/v1/bots/acme/support/knowledge/search?q=return%20a%20jacket&limit=2", {}),
            ("POST", "/api/v1/bots/acme/support/knowledge/files", {"files": {"file": ("faq.md", b"# FAQ\n\nWe ship to Mars.", "text/markdown")}}),
            ("POST", "/api/v1/bots/acme/support/knowledge/files", {"files": {"data": ("faq2.md", b"# FAQ\n\nWe ship to Venus.", "text/markdown")}}),
            ("POST", "/api/v1/bots/acme/support/knowledge/files", {"files": {"file": ("x.pdf", b"%PDF", "application/pdf")}}),
            ("POST", "/api/v1/bots/acme/support/knowledge", {"json": {"name": "a.md", "content": ""}}),
            ("GET", "/api/v1/bots/acme/support/knowledge/search?q=mars", {}),
            ("PUT", "/api/v1/bots/acme/support/plugins/demo_shop", {"json": {"enabled": True, "config": {"shop_name": 3, "zz": 1}}}),
            ("PUT", "/api/v1/bots/acme/support/plugins/nope", {"json": {"enabled": True}}),
            ("GET", "/api/v1/nothing", {}),
            ("GET", "/api/v1/conversations/xyz", {}),
        ]:
            headers = {**H, **kw.pop("headers", {})}
            r = await c.request(method, path, headers=headers, **kw)
            print(method, path, r.status_code, r.text[:1500])
    assert False
