"""The limits and timings of a runtime."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RuntimeSettings"]


@dataclass
class RuntimeSettings:
    """Limits and timings of a runtime; every one is a keyword with a default."""

    #: seconds a generation with ``on_disconnect=cancel`` may have no subscriber
    disconnect_grace_s: float = 5.0
    #: rounds of tool calls in one generation before it fails ``max_tool_rounds``
    max_tool_rounds: int = 8
    #: seconds to wait for a tool's result before failing ``tool_timeout``
    tool_timeout_s: float = 120.0
    #: merge unread deltas of the same block into one event
    coalesce: bool = True
    #: longest a plugin that never awaits runs before the runtime lets others run
    time_slice_s: float = 0.002
    #: how long new events wait to be written to the store together
    persist_interval_s: float = 0.05
    #: on a store shared with other processes (Redis): how long a running generation's new
    #: events may wait while nobody follows it from another process (one that is followed
    #: there, and a worker's, gets them every ``persist_interval_s``)
    persist_unwatched_s: float = 0.25
    #: ... which grows with the generations streaming here (``persist_unwatched_s`` for
    #: every ``UNWATCHED_RUNS`` of them, 100) up to this: a write costs a generation about
    #: the same whether it carries one chunk or 20. What a crash of this process may lose
    #: of a generation nobody follows elsewhere grows with it, under that load only.
    persist_unwatched_max_s: float = 1.0
    #: seconds running generations get to finish on shutdown before they are cancelled
    shutdown_grace_s: float = 10.0
    #: seconds a finished generation stays in memory for late subscribers
    live_retention_s: float = 30.0
    #: most events handed to a subscriber at once
    read_batch: int = 4096
    #: most generations running at once in this process
    max_running: int = 10_000
    #: seconds a generation may run in total
    max_duration_s: float = 3600.0
    #: most subscribers of one generation in this process
    max_subscribers_per_generation: int = 1000
    #: most events in one generation's log (it fails ``max_events`` past that)
    max_events_per_generation: int = 2_000_000
    #: most UTF-8 bytes of text in one block (the generation fails ``max_output`` past that)
    max_block_bytes: int = 16 * 1024 * 1024
    #: most UTF-8 bytes of text in all of one generation's blocks (``max_output`` past that)
    max_generation_bytes: int = 64 * 1024 * 1024
    #: seqs a store's mark of how far a log may have been sent reserves ahead (one store
    #: write per this many events; a crash loses at most this many seqs, never reuses one)
    sent_mark_step: int = 4096
    #: most generations running at once for one owner (API key)
    max_running_per_owner: int = 1000
