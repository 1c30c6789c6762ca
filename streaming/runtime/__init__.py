"""The runtime: preallocate, run, fan out, abort, cancel, and run tool rounds.

Data flows one way: plugin -> :class:`~streaming.lifecycle.GenerationMachine` ->
:class:`~streaming.log.EventLog` -> subscribers. :class:`Runtime` is a facade over small
collaborators, one concept each:

- :mod:`.settings`, :mod:`.registry`: the runtime's limits; generator plugins by name;
- :mod:`.admission`: whether a generation may start (global and per-key limits, draining);
- :mod:`.claims`: one generation at a time per conversation, in this process and across;
- :mod:`.multitask`: a request for a busy conversation (double texting: reject, interrupt,
  rollback, enqueue);
- :mod:`.run`: one generation running here (blocks, cancel and stop requests, child tasks);
- :mod:`.runner`: runs it to its terminal event and finishes it;
- :mod:`.driver`: the plugin shapes (async generator, coroutine writing through its
  blocks, blocking generator or function in a thread) and their responses;
- :mod:`.tool_rounds`: tool calls routed and answered, round after round;
- :mod:`.subscriptions`: following a log, subscriber limits, the disconnect grace;
- :mod:`.store_writer`: batched, final and retried writes to the store;
- :mod:`.control`: control messages from other processes to a generation running here;
- :mod:`.handles`, :mod:`.elsewhere`: one handle interface to a generation, running here
  (:class:`~.handles.LocalGeneration`) or in another process (:class:`~.elsewhere.ElsewhereGeneration`),
  or queued for a worker (:mod:`.queue`, ``serve --role api``; :mod:`.worker` runs them).

The decisions themselves are pure functions of the core, tested without a loop:
:mod:`streaming.outcome`, :mod:`streaming.routing`, :mod:`streaming.history`,
:mod:`streaming.capability_block`.

Concurrency: the runtime is **asyncio-only** (anyio's cancel scopes and timeouts are used,
on its asyncio backend). Every task belongs to a :class:`~streaming.tasks.TaskOwner` that awaits it and
logs its failure; a generation's child tasks are cancelled when it ends; what must happen
after a terminal event (the final write, releasing the conversation, waking subscribers,
the finish listeners) happens in ``finally`` blocks. The lean pieces idle streams rely on
(plain tasks, loop futures, timers) are in :mod:`.aio`.
"""

from streaming.runtime.facade import Runtime, RuntimeStats
from streaming.runtime.registry import GeneratorRegistry
from streaming.runtime.settings import RuntimeSettings

__all__ = ["GeneratorRegistry", "Runtime", "RuntimeSettings", "RuntimeStats"]
