"""The OpenAPI document describes every HTTP route, with the bodies the routes validate."""

from __future__ import annotations

import re

from starlette.routing import Route
from starlette.testclient import TestClient
from streaming.server.app import ServerSettings, create_app


def test_every_route_is_documented() -> None:
    app = create_app(ServerSettings())
    with TestClient(app) as http:
        doc = http.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    for route in app.routes:
        if not isinstance(route, Route):
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in route.methods or ():
            if method == "HEAD":
                continue
            assert (path, method.lower()) in documented, f"{method} {path} is not in /openapi.json"
    body = doc["components"]["schemas"]["GenerateRequest"]
    assert {"generator", "prompt", "messages", "blocks", "tools", "on_disconnect"} <= set(body["properties"])
    assert doc["components"]["schemas"]["ToolResultRequest"]["required"] == ["call_id"]
