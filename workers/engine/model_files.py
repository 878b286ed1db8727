"""The names of the files that describe a model besides its weights: its config files and its tokenizer.
A module of constants, with no heavy import, so that the federated site client (which has no onnx)
can load models through workers.engine.loading."""

CONFIG_FILES = {
    "config.json": "transformers model config: architecture and, for classifiers, the label names.",
    "generation_config.json": "transformers generation defaults for the language model.",
    "pruned_shapes.json": "Per-layer attention heads and FFN widths after structured pruning, which config.json "
    "cannot express; workers.engine.pruned_model.load_pruned_model(folder, task) rebuilds the torch model.",
}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
