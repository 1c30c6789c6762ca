"""Built-in plugins (not stubs): a trainable n-gram generator, a naive-Bayes tagger, a
hashed n-gram embedder and a local file importer. Every server hosts them by these names
(``streaming serve --plugin NAME=module:Class`` adds more)."""

from __future__ import annotations

__all__ = ["BUILTIN_PLUGINS"]

#: name -> "module:Class" of the plugin instances every server hosts
BUILTIN_PLUGINS: dict[str, str] = {
    "ngram": "streaming.builtins.ngram:NGramGenerator",
    "ngram-blocks": "streaming.builtins.ngram:NGramBlockGenerator",
    "bayes-tagger": "streaming.builtins.bayes:NaiveBayesTagger",
    "hash-embedder": "streaming.builtins.hashed:HashedNgramEmbedder",
    "file-importer": "streaming.builtins.importer:LocalFileImporter",
}

# A real sentence-embedding model, when the optional `embeddings` extra is installed.
from streaming.builtins.sentence import available as _sentence_available  # noqa: E402

if _sentence_available():
    BUILTIN_PLUGINS["sentence-embedder"] = "streaming.builtins.sentence:SentenceEmbedder"
