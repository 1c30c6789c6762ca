"""The Anthropic Messages API's pieces below its route (``server/routes/messages.py``).

- :mod:`.messages`: the request body (a pydantic model, the fields Anthropic's SDKs send)
  and its conversion to a runtime :class:`~streaming.requests.GenerateRequest`;
- :mod:`.errors`: errors in Anthropic's shape, with the status Anthropic would answer.

The projection of a generation's events to Messages stream events is pure and lives in the
core: :mod:`streaming.dialects.anthropic`.
"""
