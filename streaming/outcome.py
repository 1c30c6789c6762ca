"""Which terminal event a generation's run ends with: a pure decision, no I/O.

A run ends in one of three ways, decided from what happened, in this order of precedence:

1. something outside the plugin stopped it with an error (shutdown, the store failing, its
   lease lapsing in another process): ``generation.failed`` with that error;
2. it was cancelled (a client, the last subscriber leaving) and the plugin then stopped:
   ``generation.cancelled``; a cancel nobody asked for is the duration limit, which fails
   it (``max_duration``); what the plugin raised while being cancelled does not count;
3. otherwise the plugin's own ending: ``generation.failed`` with what it raised (a
   :class:`~streaming.errors.StreamingError` as is, anything else as ``plugin_error``), or
   ``generation.completed``.

:func:`apply_outcome` writes the decision into a
:class:`~streaming.lifecycle.GenerationMachine` and returns the terminal event.
"""

from __future__ import annotations

from dataclasses import dataclass

from streaming.errors import (
    GenerationCancelledError,
    IllegalTransitionError,
    PluginError,
    StreamingError,
)
from streaming.events import Event
from streaming.lifecycle import GenerationMachine
from streaming.model import GenerationState

__all__ = ["Outcome", "apply_outcome", "as_streaming_error", "terminal_outcome", "unwrap"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ends: ``state`` with ``error`` (failed) or ``reason`` (cancelled)."""

    state: GenerationState
    error: StreamingError | None = None
    reason: str | None = None
    #: the duration limit ended it (a cancel nobody asked for)
    timed_out: bool = False


def unwrap(exc: BaseException) -> BaseException:
    """The first leaf of a (nested) exception group; task groups wrap what they raise."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def as_streaming_error(exc: BaseException) -> StreamingError:
    """What a plugin raised, as the error a client is told."""
    inner = unwrap(exc)
    if isinstance(inner, StreamingError):
        return inner
    return PluginError(f"{type(inner).__name__}: {inner}")


def terminal_outcome(
    *,
    raised: BaseException | None = None,
    stop_error: StreamingError | None = None,
    cancel_reason: str | None = None,
    cancelled: bool = False,
) -> Outcome:
    """Decide how a run ends.

    Args:
        raised: what the plugin's run raised (None if it returned).
        stop_error: the error a stop request carried (shutdown, store, lease).
        cancel_reason: why a cancel was asked for (None if none was).
        cancelled: the run was interrupted by a cancel (asked for, or the duration limit).
    """
    if stop_error is not None:
        return Outcome(GenerationState.FAILED, error=stop_error)
    error = as_streaming_error(raised) if raised is not None else None
    if cancelled or isinstance(error, GenerationCancelledError):
        if cancel_reason is None:
            limit = StreamingError("generation ran past max_duration_s", code="max_duration")
            return Outcome(GenerationState.FAILED, error=limit, timed_out=True)
        return Outcome(GenerationState.CANCELLED, reason=cancel_reason)
    if error is not None:
        return Outcome(GenerationState.FAILED, error=error)
    if cancel_reason is not None:
        return Outcome(GenerationState.CANCELLED, reason=cancel_reason)
    return Outcome(GenerationState.SUCCEEDED)


def apply_outcome(machine: GenerationMachine, outcome: Outcome) -> Event | None:
    """End ``machine`` as decided; its terminal event, or None if it had already ended.

    If ending it as decided fails (a ``MemoryError`` while its blocks' texts are joined, say),
    it is failed instead with code ``internal_error`` (what was half done stays done: the
    blocks already closed are not closed again), so its log still ends with one terminal
    event. Raises only if that fails too.
    """
    try:
        return _apply(machine, outcome)
    except IllegalTransitionError:  # already ended (a race with cancel is harmless)
        return None
    except Exception as exc:
        error = StreamingError(
            f"the generation could not be ended as {outcome.state.value}: {type(exc).__name__}",
            code="internal_error",
        )
        del exc  # what it holds (a huge traceback's frames) may be what memory lacks
        try:
            return _apply(machine, Outcome(GenerationState.FAILED, error=error))
        except IllegalTransitionError:
            return None


def _apply(machine: GenerationMachine, outcome: Outcome) -> Event:
    if outcome.state is GenerationState.FAILED:
        assert outcome.error is not None
        error = outcome.error
        return machine.fail(error.code, error.message, error.suggestion)
    if outcome.state is GenerationState.CANCELLED:
        return machine.cancel(outcome.reason or "cancelled")
    return machine.succeed()
