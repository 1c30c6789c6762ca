"""A trainable multinomial naive-Bayes tagger over labelled blocks.

Training data: a file whose blocks carry a label tag, ``kind`` = the ``label_kind``
training parameter (default ``label``) and the label in ``name``. Features are lower-cased
words and word bigrams; probabilities use add-``alpha`` smoothing. Held-out blocks
(``testing_holdout_percent``, split by ``test_split_seed``) give ``accuracy`` in
``training_results``, next to ``chance`` (1 / number of labels) and ``majority_baseline``
(always guessing the most common training label).

Tagging adds to each text block a tag ``{kind: label_kind, name: <label>, value: {"score":
p, "string-value": <label>}}`` (``p`` the posterior probability).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from streaming.builtins.text import words
from streaming.errors import InvalidRequestError
from streaming.model import Block, Tag, TagValueKey
from streaming.plugin.inputs import (
    BlockAndTagPluginInput,
    TrainingParameterPluginInput,
    TrainPluginInput,
)
from streaming.plugin.outputs import (
    BlockAndTagPluginOutput,
    TrainingParameterPluginOutput,
    TrainPluginOutput,
)
from streaming.plugin.request import InvocableResponse, PluginRequest
from streaming.plugin.tagger import TrainableTagger
from streaming.plugin.trainable_model import TrainableModel

__all__ = ["NaiveBayesModel", "NaiveBayesTagger"]


def features(text: str) -> list[str]:
    toks = [t.lower() for t in words(text) if t[0].isalnum()]
    return toks + [a + " " + b for a, b in zip(toks, toks[1:], strict=False)]


def _label(block: Block, kind: str) -> str | None:
    for tag in block.tags:
        if tag.kind == kind and tag.name:
            return tag.name
    return None


class NaiveBayesModel(TrainableModel[dict[str, Any]]):
    """Label priors and per-label feature counts."""

    def __init__(self) -> None:
        self.label_kind = "label"
        self.alpha = 1.0
        self.priors: Counter[str] = Counter()
        self.counts: dict[str, Counter[str]] = {}
        self.totals: Counter[str] = Counter()
        self.vocab: set[str] = set()

    def save_to_folder(self, checkpoint_path: Path) -> None:
        state = {
            "label_kind": self.label_kind,
            "alpha": self.alpha,
            "priors": dict(self.priors),
            "counts": {k: dict(v) for k, v in self.counts.items()},
        }
        (checkpoint_path / "bayes.json").write_text(json.dumps(state))

    def load_from_folder(self, checkpoint_path: Path) -> None:
        state = json.loads((checkpoint_path / "bayes.json").read_text())
        self.label_kind = state["label_kind"]
        self.alpha = float(state["alpha"])
        self.priors = Counter(state["priors"])
        self.counts = {k: Counter(v) for k, v in state["counts"].items()}
        self._derive()

    def _derive(self) -> None:
        self.totals = Counter({k: sum(v.values()) for k, v in self.counts.items()})
        self.vocab = set().union(*self.counts.values()) if self.counts else set()

    def classify(self, text: str) -> tuple[str, float]:
        """The most probable label and its posterior probability."""
        if not self.priors:
            raise InvalidRequestError("the model has no labels")
        feats = features(text)
        n = sum(self.priors.values())
        v = max(len(self.vocab), 1)
        scores = {}
        for label, prior in self.priors.items():
            counts, total = self.counts.get(label, Counter()), self.totals[label]
            denom = math.log(total + self.alpha * v)
            scores[label] = math.log(prior / n) + sum(
                math.log(counts.get(f, 0) + self.alpha) - denom for f in feats if f in self.vocab
            )
        best = max(scores, key=lambda k: scores[k])
        top = scores[best]
        z = sum(math.exp(s - top) for s in scores.values())
        return best, 1.0 / z

    def train(self, input: PluginRequest[TrainPluginInput]) -> InvocableResponse[TrainPluginOutput]:
        data = input.data
        assert data is not None
        params = {**(self.config or {}).get("training_params", {}), **data.training_params}
        self.label_kind = str(params.get("label_kind", "label"))
        self.alpha = float(params.get("alpha", 1.0))
        if self.alpha <= 0:
            raise InvalidRequestError("training_params.alpha must be positive")
        if data.training_file is None:
            raise InvalidRequestError("no training data: give a file of labelled blocks")
        examples = [
            (b.text, label)
            for b in data.training_file.blocks
            if b.is_text and b.text.strip() and (label := _label(b, self.label_kind)) is not None
        ]
        if len({lb for _, lb in examples}) < 2:
            raise InvalidRequestError(
                f"the training file needs blocks with at least two labels (tags of kind {self.label_kind!r})"
            )
        train_ids, test_ids = data.split(len(examples), default_percent=0.2)
        epochs = max(1, min(int(data.training_epochs or 1), 100))
        step = max(1, len(train_ids) // 5)
        for epoch in range(1, epochs + 1):
            self.priors, self.counts = Counter(), {}
            for done, i in enumerate(train_ids, 1):
                text, label = examples[i]
                self.priors[label] += 1
                self.counts.setdefault(label, Counter()).update(features(text))
                if done % step == 0 or done == len(train_ids):
                    self.report_progress(
                        {"event": "progress", "epoch": epoch, "epochs": epochs,
                         "examples_done": done, "examples_total": len(train_ids)}
                    )
            self._derive()
        right = 0
        for i in test_ids:
            text, label = examples[i]
            right += self.classify(text)[0] == label
        majority = self.priors.most_common(1)[0][0]
        results = {
            "labels": sorted(self.priors),
            "train_examples": len(train_ids),
            "heldout_examples": len(test_ids),
            "accuracy": right / len(test_ids) if test_ids else None,
            "chance": 1 / len(self.priors),
            "majority_baseline": (
                sum(examples[i][1] == majority for i in test_ids) / len(test_ids) if test_ids else None
            ),
        }
        self.report_progress({"event": "evaluated", **results})
        return InvocableResponse(data=TrainPluginOutput(training_results=results))


class NaiveBayesTagger(TrainableTagger):
    """Tags each text block of a file with the label its trained model predicts."""

    def model_cls(self) -> type[NaiveBayesModel]:
        return NaiveBayesModel

    def get_training_parameters(
        self, request: PluginRequest[TrainingParameterPluginInput]
    ) -> InvocableResponse[TrainingParameterPluginOutput]:
        data = request.data or TrainingParameterPluginInput()
        return InvocableResponse(
            data=TrainingParameterPluginOutput(
                training_epochs=data.training_epochs or 1,
                testing_holdout_percent=0.2 if data.testing_holdout_percent is None else data.testing_holdout_percent,
                test_split_seed=data.test_split_seed or 0,
                training_params={"label_kind": "label", "alpha": 1.0, **data.training_params},
                inference_params=dict(data.inference_params),
            )
        )

    def run_with_model(
        self, request: PluginRequest[BlockAndTagPluginInput], model: TrainableModel[Any]
    ) -> InvocableResponse[BlockAndTagPluginOutput]:
        assert isinstance(model, NaiveBayesModel) and request.data is not None
        file = request.data.file.model_copy(deep=True)
        for block in file.blocks:
            if not block.is_text or not block.text.strip():
                continue
            label, score = model.classify(block.text)
            block.tags = [t for t in block.tags if t.kind != model.label_kind] + [
                Tag(kind=model.label_kind, name=label,
                    value={TagValueKey.STRING_VALUE: label, TagValueKey.SCORE: round(score, 6)})
            ]
        return InvocableResponse(data=BlockAndTagPluginOutput(file=file))
