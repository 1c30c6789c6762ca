"""A trainable word n-gram model, and two generators that use it.

:class:`NGramModel` learns, from a file's text blocks, how often each word follows each
context of up to ``order - 1`` words; it generates by sampling the next word from the
longest context it has seen (backing off to shorter ones). Held-out blocks measure how
often its most likely next word is the right one (``heldout_next_word_accuracy``), next
to what always guessing the most frequent word would score (``baseline_accuracy``).

- :class:`NGramGenerator` (``ngram``) streams the generated words, one chunk each;
- :class:`NGramBlockGenerator` (``ngram-blocks``) is the seed's non-streaming
  ``TrainableGenerator``: it returns the text as one block.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio.lowlevel

from streaming.builtins.text import words
from streaming.errors import InvalidRequestError
from streaming.model import Block, MimeTypes
from streaming.plugin.generator import TrainableGenerator
from streaming.plugin.inputs import (
    RawBlockAndTagPluginInput,
    RawBlockAndTagPluginInputWithPreallocatedBlocks,
    TrainingParameterPluginInput,
    TrainPluginInput,
)
from streaming.plugin.outputs import (
    BlockTypePluginOutput,
    RawBlockAndTagPluginOutput,
    TrainingParameterPluginOutput,
    TrainPluginOutput,
)
from streaming.plugin.request import InvocableResponse, PluginRequest
from streaming.plugin.streaming_generator import TrainableStreamingGenerator
from streaming.plugin.trainable_model import TrainableModel

__all__ = ["NGramBlockGenerator", "NGramGenerator", "NGramModel"]

_SEP = "\x1f"
_NO_SPACE_BEFORE = set(".,;:!?)]}'\"")


def detokenize(tokens: list[str], first: bool = True) -> str:
    """Words joined with spaces, punctuation attached to the word before it."""
    out = []
    for i, tok in enumerate(tokens):
        if (i > 0 or not first) and tok not in _NO_SPACE_BEFORE:
            out.append(" ")
        out.append(tok)
    return "".join(out)


def _texts(request: PluginRequest[TrainPluginInput]) -> list[str]:
    data = request.data
    if data is None or data.training_file is None:
        raise InvalidRequestError("no training data: give a file of text blocks")
    texts = [b.text for b in data.training_file.blocks if b.is_text and b.text.strip()]
    if not texts:
        raise InvalidRequestError("the training file has no text blocks")
    return texts


class NGramModel(TrainableModel[dict[str, Any]]):
    """Word n-gram counts with backoff."""

    def __init__(self) -> None:
        self.order = 3
        self.counts: dict[str, Counter[str]] = {}

    # -- state --

    def save_to_folder(self, checkpoint_path: Path) -> None:
        state = {"order": self.order, "counts": {k: dict(v) for k, v in self.counts.items()}}
        (checkpoint_path / "ngram.json").write_text(json.dumps(state))

    def load_from_folder(self, checkpoint_path: Path) -> None:
        state = json.loads((checkpoint_path / "ngram.json").read_text())
        self.order = int(state["order"])
        self.counts = {k: Counter(v) for k, v in state["counts"].items()}

    # -- training --

    def _observe(self, tokens: list[str]) -> None:
        for i, tok in enumerate(tokens):
            for n in range(0, self.order):
                if i - n < 0:
                    break
                key = _SEP.join(tokens[i - n : i])
                self.counts.setdefault(key, Counter())[tok] += 1

    def predict(self, context: list[str]) -> Counter[str]:
        """The next-word counts of the longest known suffix of ``context``."""
        for n in range(min(self.order - 1, len(context)), -1, -1):
            found = self.counts.get(_SEP.join(context[len(context) - n :]) if n else "")
            if found:
                return found
        return Counter()

    def train(self, input: PluginRequest[TrainPluginInput]) -> InvocableResponse[TrainPluginOutput]:
        data = input.data
        assert data is not None
        params = {**(self.config or {}).get("training_params", {}), **data.training_params}
        order = int(params.get("order", 3))
        if not 1 <= order <= 8:
            raise InvalidRequestError("training_params.order must be between 1 and 8")
        self.order = order
        self.counts = {}
        texts = _texts(input)
        train_ids, test_ids = data.split(len(texts), default_percent=0.1)
        epochs = max(1, min(int(data.training_epochs or 1), 100))
        step = max(1, len(train_ids) // 10)
        tokens_seen = 0
        for epoch in range(1, epochs + 1):
            # Counting is one pass; further epochs recount (so progress stays honest).
            self.counts = {}
            tokens_seen = 0
            for done, i in enumerate(train_ids, 1):
                toks = words(texts[i])
                tokens_seen += len(toks)
                self._observe(toks)
                if done % step == 0 or done == len(train_ids):
                    self.report_progress(
                        {"event": "progress", "epoch": epoch, "epochs": epochs,
                         "blocks_done": done, "blocks_total": len(train_ids), "tokens": tokens_seen}
                    )
        right = total = baseline = 0
        top_word = self.counts[""].most_common(1)[0][0] if self.counts.get("") else ""
        for i in test_ids:
            toks = words(texts[i])
            for j in range(1, len(toks)):
                guess = self.predict(toks[max(0, j - self.order + 1) : j]).most_common(1)
                right += bool(guess and guess[0][0] == toks[j])
                baseline += toks[j] == top_word
                total += 1
        results = {
            "order": self.order,
            "train_blocks": len(train_ids),
            "heldout_blocks": len(test_ids),
            "tokens": tokens_seen,
            "contexts": len(self.counts),
            "heldout_tokens": total,
            "heldout_next_word_accuracy": right / total if total else None,
            "baseline_accuracy": baseline / total if total else None,
        }
        self.report_progress({"event": "evaluated", **results})
        return InvocableResponse(data=TrainPluginOutput(training_results=results))

    # -- generating --

    def generate(self, prompt: str, max_tokens: int, seed: int | None, temperature: float = 1.0) -> Iterator[str]:
        """The next ``max_tokens`` words after ``prompt``, sampled."""
        rng = random.Random(seed)
        context = words(prompt)[-(self.order - 1) :] if self.order > 1 else []
        for _ in range(max_tokens):
            options = self.predict(context)
            if not options:
                return
            choices = list(options)
            weights = [c ** (1.0 / max(temperature, 0.05)) for c in options.values()]
            tok = rng.choices(choices, weights)[0]
            yield tok
            context = (context + [tok])[-(self.order - 1) :] if self.order > 1 else []


def _prompt_and_options(data: RawBlockAndTagPluginInput) -> tuple[str, int, int | None, float]:
    texts = [b.text for b in data.blocks if b.is_text and b.chat_role in (None, "user")]
    prompt = texts[-1] if texts else ""
    opts = data.options
    try:
        max_tokens = max(1, min(int(opts.get("max_tokens", 40)), 4096))
        seed = int(opts["seed"]) if opts.get("seed") is not None else None
        temperature = float(opts.get("temperature", 1.0))
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"bad option: {exc}") from exc
    return prompt, max_tokens, seed, temperature


def _training_parameters(request: PluginRequest[TrainingParameterPluginInput]) -> TrainingParameterPluginOutput:
    data = request.data or TrainingParameterPluginInput()
    return TrainingParameterPluginOutput(
        training_epochs=data.training_epochs or 1,
        testing_holdout_percent=0.1 if data.testing_holdout_percent is None else data.testing_holdout_percent,
        test_split_seed=data.test_split_seed or 0,
        training_params={"order": 3, **data.training_params},
        inference_params={"max_tokens": 40, "temperature": 1.0, **data.inference_params},
    )


class NGramGenerator(TrainableStreamingGenerator):
    """Streams words from the instance's trained :class:`NGramModel`.

    Options: ``max_tokens`` (40), ``seed`` (sampling seed), ``temperature`` (1.0). The
    prompt is the last user block; generation continues from its last words.
    """

    def model_cls(self) -> type[NGramModel]:
        return NGramModel

    def determine_output_block_types(
        self, request: PluginRequest[RawBlockAndTagPluginInput]
    ) -> InvocableResponse[BlockTypePluginOutput]:
        return InvocableResponse(data=BlockTypePluginOutput(block_types_to_create=[MimeTypes.TXT]))

    def get_training_parameters(
        self, request: PluginRequest[TrainingParameterPluginInput]
    ) -> InvocableResponse[TrainingParameterPluginOutput]:
        return InvocableResponse(data=_training_parameters(request))

    async def run_with_model(
        self, request: PluginRequest[RawBlockAndTagPluginInputWithPreallocatedBlocks], model: TrainableModel[Any]
    ) -> AsyncIterator[str]:
        assert isinstance(model, NGramModel) and request.data is not None
        prompt, max_tokens, seed, temperature = _prompt_and_options(request.data)
        first = True
        for tok in model.generate(prompt, max_tokens, seed, temperature):
            yield detokenize([tok], first=first)
            first = False
            await anyio.lowlevel.checkpoint()


class NGramBlockGenerator(TrainableGenerator):
    """The seed's ``TrainableGenerator``: the same model, the text returned as one block."""

    def model_cls(self) -> type[NGramModel]:
        return NGramModel

    def get_training_parameters(
        self, request: PluginRequest[TrainingParameterPluginInput]
    ) -> InvocableResponse[TrainingParameterPluginOutput]:
        return InvocableResponse(data=_training_parameters(request))

    def run_with_model(
        self, request: PluginRequest[RawBlockAndTagPluginInput], model: TrainableModel[Any]
    ) -> InvocableResponse[RawBlockAndTagPluginOutput]:
        assert isinstance(model, NGramModel) and request.data is not None
        prompt, max_tokens, seed, temperature = _prompt_and_options(request.data)
        text = detokenize(list(model.generate(prompt, max_tokens, seed, temperature)))
        return InvocableResponse(data=RawBlockAndTagPluginOutput(blocks=[Block(text=text)]))
