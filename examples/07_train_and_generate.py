"""Train a plugin, checkpoint it, restart the server, and generate from the checkpoint.

1. starts `streaming serve` on a sqlite file;
2. imports a text into a file (`POST /plugins/file-importer/import`);
3. trains the built-in word n-gram generator on it (`POST /plugins/ngram/train`): the
   training runs as a generation, so its progress streams over SSE like any output;
4. polls the training task with `isStatusCheck` for its results and checkpoint path;
5. stops the server and starts a new process on the same sqlite file;
6. streams generated text from the saved checkpoint (`POST /generations`, generator `ngram`).

Needs nothing beyond ``pip install -e .``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx
from streaming.client import StreamingClient

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "README.md").read_text()


def serve(store: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streaming.server.cli", "serve", "--port", str(port), "--store", store, "--log-level", "warning"],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.05)


def plugin_request(data: dict[str, object], **extra: object) -> dict[str, object]:
    return {"data": data, **extra}


async def train(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http, StreamingClient(url) as client:
        r = await http.post("/plugins/file-importer/import", json=plugin_request({"value": TEXT}))
        file_id = r.json()["data"]["file_id"]
        print("imported into", file_id)

        r = await http.post(
            "/plugins/ngram/train", json=plugin_request({"file_id": file_id, "training_params": {"order": 3}})
        )
        task = r.json()["status"]["taskId"]
        print("training task", task, r.json()["status"]["state"])
        progress = ""
        async for event in client.iter_events(task):
            if event.type == "block.delta":
                progress += event.data["text"]
                while "\n" in progress:
                    line, progress = progress.split("\n", 1)
                    if line.startswith("{"):
                        item = json.loads(line)
                        if item.get("event") == "progress":
                            print(f"  progress: {item['blocks_done']}/{item['blocks_total']} blocks")
            elif event.terminal:
                print("training", event.type)

        r = await http.post(
            "/plugins/ngram/train", json=plugin_request({}, isStatusCheck=True, status={"taskId": task})
        )
        status, output = r.json()["status"], r.json()["data"]
        results = output["training_results"]
        print("status:", status["state"])
        print("archive:", output["archive_path"])
        print(
            f"held-out next-word accuracy {results['heldout_next_word_accuracy']:.2f}"
            f" (most-frequent-word baseline {results['baseline_accuracy']:.2f})"
        )


async def generate(url: str) -> None:
    async with StreamingClient(url) as client:
        stream = await client.generate("ngram", prompt="The runtime", options={"max_tokens": 40, "seed": 7})
        async for block in stream.blocks():
            async for text in block:
                print(text, end="", flush=True)
            print()
        print("generation", stream.events[-1].type)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/plugins.db"
        proc, url = serve(store)
        try:
            anyio.run(train, url)
        finally:
            proc.terminate()
            proc.wait(30)
        proc, url = serve(store)  # a new process: the checkpoint comes from the sqlite file
        print("restarted")
        try:
            anyio.run(generate, url)
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
