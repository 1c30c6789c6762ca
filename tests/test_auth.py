"""API keys and read tokens: who may see what."""

from __future__ import annotations

import anyio
import httpx
import pytest
from streaming.client.client import StreamingClient
from streaming.server.app import ServerSettings, create_app
from streaming.server.auth import AuthConfig

from tests.conftest import LiveServer

pytestmark = pytest.mark.anyio

KEY_A, KEY_B = "key-alice-0123456789", "key-bob-9876543210"


@pytest.fixture
def srv():
    live = LiveServer(create_app(ServerSettings(api_keys=[KEY_A, KEY_B]))).start()
    yield live
    live.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_credentials_required_everywhere_but_healthz(srv) -> None:
    async with httpx.AsyncClient(base_url=srv.url) as http:
        assert (await http.get("/healthz")).status_code == 200
        for method, path in [("POST", "/generations"), ("GET", "/generations/x"), ("GET", "/metrics"),
                             ("GET", "/files/x"), ("GET", "/blocks/x")]:
            r = await http.request(method, path)
            assert r.status_code == 401, path
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
            r = await http.request(method, path, headers=bearer("wrong-key"))
            assert r.status_code == 401
            assert r.json()["error"]["message"] == "invalid credentials"
        r = await http.post("/generations", json={"generator": "echo", "prompt": "hi"}, headers=bearer(KEY_A))
        assert r.status_code == 201


async def test_generations_belong_to_their_key(srv) -> None:
    async with httpx.AsyncClient(base_url=srv.url) as http:
        r = await http.post("/generations", json={"generator": "echo", "prompt": "secret text"}, headers=bearer(KEY_A))
        body = r.json()
        gen_id, file_id = body["generation"]["id"], body["generation"]["file_id"]
        block_id = body["blocks"][0]["id"]
        assert "owner" not in body["generation"]
        async with StreamingClient(srv.url, headers=bearer(KEY_A)) as alice:
            assert await (await alice.attach(gen_id)).text() == "secret text"
        # Bob gets 404 for every one of Alice's ids: the same as for ids that do not exist.
        for path in (f"/generations/{gen_id}", f"/generations/{gen_id}/events", f"/blocks/{block_id}",
                     f"/blocks/{block_id}/raw", f"/files/{file_id}"):
            r = await http.get(path, headers=bearer(KEY_B))
            assert r.status_code == 404, path
            assert (await http.get(path, headers=bearer(KEY_A))).status_code == 200, path
        r = await http.post(f"/generations/{gen_id}/cancel", headers=bearer(KEY_B))
        assert r.status_code == 404
        r = await http.post("/generations", headers=bearer(KEY_B),
                            json={"generator": "echo", "prompt": "x", "file_id": file_id})
        assert r.status_code == 404  # nor can Bob continue Alice's conversation
        file = (await http.get(f"/files/{file_id}", headers=bearer(KEY_A))).json()
        assert "owner" not in file


async def test_read_token_reaches_its_generation_only(srv) -> None:
    async with httpx.AsyncClient(base_url=srv.url) as http:
        tools = [{"name": "ask", "description": "asks the user", "parameters": {"type": "object", "properties": {}}}]
        script = {"rounds": [[{"tool_call": {"name": "ask", "args": {}}}], [{"echo_tool_results": True}]]}
        r = await http.post("/generations", headers=bearer(KEY_A),
                            json={"generator": "scripted", "prompt": "x", "tools": tools, "options": script})
        gen_id = r.json()["generation"]["id"]
        token = r.json()["read_token"]
        other = (await http.post("/generations", json={"generator": "echo", "prompt": "other"},
                                 headers=bearer(KEY_A))).json()["generation"]["id"]
        # The browser's token streams and answers the tool of its generation, by header or query.
        async with StreamingClient(srv.url, headers=bearer(token)) as browser:
            gen = await browser.attach(gen_id)
            gen.on_tool_call("ask", lambda args: "yes")
            assert await gen.text() == "[ask result: yes]"
        r = await http.get(f"/generations/{gen_id}/events", params={"access_token": token})
        assert r.status_code == 200 and "generation.completed" in r.text
        # ...and nothing else.
        assert (await http.get(f"/generations/{other}", headers=bearer(token))).status_code == 404
        r = await http.post("/generations", json={"generator": "echo", "prompt": "x"}, headers=bearer(token))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert (await http.get("/metrics", headers=bearer(token))).status_code == 403
        forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
        assert (await http.get(f"/generations/{gen_id}", headers=bearer(forged))).status_code == 401
        swapped = AuthConfig([KEY_A, KEY_B]).read_token(other).replace(other, gen_id)
        assert (await http.get(f"/generations/{gen_id}", headers=bearer(swapped))).status_code == 401


def test_tokens_are_the_same_across_processes_with_the_same_keys() -> None:
    a, b = AuthConfig([KEY_A, KEY_B]), AuthConfig([KEY_B, KEY_A])
    assert a.read_token("gen_1") == b.read_token("gen_1")
    assert AuthConfig([KEY_A]).read_token("gen_1") != a.read_token("gen_1")
    assert a.authenticate(KEY_A) != a.authenticate(KEY_B)
    assert a.authenticate("nope") is None


def test_openai_sdk_sees_its_own_auth_error(srv) -> None:
    import openai

    bad = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "invalid_api_key"
    good = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=KEY_A, max_retries=0)
    answer = good.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "hi"
    gen_id = answer.id.removeprefix("chatcmpl-")
    # The generation it made belongs to the key that made it.
    assert httpx.get(f"{srv.url}/generations/{gen_id}", headers=bearer(KEY_A)).status_code == 200
    assert httpx.get(f"{srv.url}/generations/{gen_id}", headers=bearer(KEY_B)).status_code == 404


async def test_signed_content_urls_expire_and_reach_one_block(srv) -> None:
    import base64

    png = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
    script = {"blocks": ["image/png", "text/plain"],
              "rounds": [[{"text": base64.b64encode(png).decode(), "block": 0}, {"text": "caption", "block": 1}]]}
    async with httpx.AsyncClient(base_url=srv.url) as http:
        r = await http.post("/generations", headers=bearer(KEY_A),
                            json={"generator": "scripted", "prompt": "draw", "options": script})
        gen_id = r.json()["generation"]["id"]
        async with StreamingClient(srv.url, headers=bearer(KEY_A)) as client:
            await (await client.attach(gen_id)).wait()
        image_id, text_id = [b["id"] for b in (await http.get(f"/generations/{gen_id}", headers=bearer(KEY_A))).json()["blocks"]]
        url = (await http.get(f"/blocks/{image_id}", headers=bearer(KEY_A))).json()["content_url"]
        assert "signature=" in url and "expires=" in url
        # Anyone holding the URL gets the bytes, with their type, and nothing else.
        r = await http.get(url)
        assert r.status_code == 200 and r.content == png and r.headers["content-type"] == "image/png"
        assert (await http.get(url.replace(image_id, text_id))).status_code == 401
        assert (await http.get(url[:-3] + "abc")).status_code == 401
        assert (await http.get(f"/blocks/{image_id}")).status_code == 401
    auth = srv.app.state.auth
    expired = auth.signed_raw_url(image_id, ttl_s=-5)
    async with httpx.AsyncClient(base_url=srv.url) as http:
        assert (await http.get(expired)).status_code == 401


async def test_per_key_limit_and_duration_limit() -> None:
    from streaming.runtime import RuntimeSettings

    live = LiveServer(create_app(ServerSettings(
        api_keys=[KEY_A, KEY_B],
        generators={"counting": "tests.plugins:CountingGenerator"},
        runtime=RuntimeSettings(max_running_per_owner=1, max_duration_s=0.5),
    ))).start()
    try:
        body = {"generator": "counting", "prompt": "x", "options": {"key": "perkey", "delay_ms": 5},
                "on_disconnect": "continue"}
        async with httpx.AsyncClient(base_url=live.url) as http:
            first = await http.post("/generations", json=body, headers=bearer(KEY_A))
            assert first.status_code == 201
            # Alice is at her limit; Bob is not.
            r = await http.post("/generations", json=body, headers=bearer(KEY_A))
            assert r.status_code == 429 and r.headers["retry-after"]
            assert (await http.post("/generations", json=body, headers=bearer(KEY_B))).status_code == 201
        # The endless generation is ended by the duration limit, with its code.
        async with StreamingClient(live.url, headers=bearer(KEY_A)) as client:
            events = [ev async for ev in await client.attach(first.json()["generation"]["id"])]
        assert events[-1].type == "generation.failed"
        assert events[-1].data["error"]["code"] == "max_duration"
        # Once it has ended, Alice's slot is free again.
        async with httpx.AsyncClient(base_url=live.url) as http:
            with anyio.fail_after(5):
                while (r := await http.post("/generations", json=body, headers=bearer(KEY_A))).status_code == 429:
                    await anyio.sleep(0.05)
            assert r.status_code == 201, r.text
    finally:
        live.stop()
