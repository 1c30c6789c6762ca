"""The plugin package: request envelopes, inputs, outputs and plugin base classes."""

from streaming.plugin.conversation import chat_messages, fold_system_prompt
from streaming.plugin.embedder import Embedder
from streaming.plugin.file_importer import FileImporter
from streaming.plugin.generator import Generator, TrainableGenerator
from streaming.plugin.inputs import (
    BlockAndTagPluginInput,
    FileImportPluginInput,
    RawBlockAndTagPluginInput,
    RawBlockAndTagPluginInputWithPreallocatedBlocks,
    TrainingParameterPluginInput,
    TrainPluginInput,
)
from streaming.plugin.outputs import (
    BlockAndTagPluginOutput,
    BlockTypePluginOutput,
    EmbeddedItemsPluginOutput,
    RawBlockAndTagPluginOutput,
    RawDataPluginOutput,
    StreamCompletePluginOutput,
    TrainingParameterPluginOutput,
    TrainPluginOutput,
)
from streaming.plugin.request import (
    Http,
    InvocableResponse,
    PluginRequest,
    PluginRequestContext,
    Task,
    TaskState,
)
from streaming.plugin.service import PluginService
from streaming.plugin.streaming_generator import StreamingGenerator, TrainableStreamingGenerator
from streaming.plugin.tagger import Tagger, TrainableTagger
from streaming.plugin.trainable_model import TrainableModel
from streaming.plugin.trainable_service import TrainablePluginService

__all__ = [
    "BlockAndTagPluginInput",
    "BlockAndTagPluginOutput",
    "BlockTypePluginOutput",
    "EmbeddedItemsPluginOutput",
    "Embedder",
    "FileImportPluginInput",
    "FileImporter",
    "Generator",
    "Http",
    "InvocableResponse",
    "PluginRequest",
    "PluginRequestContext",
    "PluginService",
    "RawBlockAndTagPluginInput",
    "RawBlockAndTagPluginInputWithPreallocatedBlocks",
    "RawBlockAndTagPluginOutput",
    "RawDataPluginOutput",
    "StreamCompletePluginOutput",
    "StreamingGenerator",
    "Tagger",
    "Task",
    "TaskState",
    "TrainPluginInput",
    "TrainPluginOutput",
    "TrainableGenerator",
    "TrainableModel",
    "TrainablePluginService",
    "TrainableStreamingGenerator",
    "TrainableTagger",
    "TrainingParameterPluginInput",
    "TrainingParameterPluginOutput",
    "chat_messages",
    "fold_system_prompt",
]
