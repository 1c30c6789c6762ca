"""What every benchmark server shares: ``--port P``, then uvicorn with uvloop and httptools.

Stdlib and uvicorn only, so the LangServe server can use it from its own virtualenv.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

__all__ = ["serve"]


def serve(app: Any) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
        log_level="warning", access_log=False,
    )
