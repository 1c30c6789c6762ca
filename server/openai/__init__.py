"""The OpenAI-compatible API's pieces below its routes (``server/routes/openai.py``).

- :mod:`.schema`: the request bodies (pydantic models, fields OpenAI's SDKs send);
- :mod:`.convert`: a request as a runtime :class:`~streaming.requests.GenerateRequest`;
- :mod:`.errors`: errors in OpenAI's shape, with the status OpenAI would answer.

The projection of a generation's events to chat-completion chunks is pure and lives in the
core: :mod:`streaming.dialects.openai_chat`.
"""
