"""The plugin package: request envelopes, inputs, outputs and plugin base classes."""

from streaming.plugin.conversation import chat_messages, fold_system_prompt
from streaming.plugin.generator import Generator
from streaming.plugin.inputs import (
    BlockAndTagPluginInput,
    FileImportPluginInput,
    RawBlockAndTagPluginInput,
    RawBlockAndTagPluginInputWithPreallocatedBlocks,
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
from streaming.plugin.streaming_generator import StreamingGenerator

__all__ = [
    "BlockAndTagPluginInput",
    "BlockAndTagPluginOutput",
    "BlockTypePluginOutput",
    "EmbeddedItemsPluginOutput",
    "FileImportPluginInput",
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
    "Task",
    "TaskState",
    "TrainPluginInput",
    "TrainPluginOutput",
    "TrainingParameterPluginOutput",
    "chat_messages",
    "fold_system_prompt",
]
