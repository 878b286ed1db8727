"""Tiny Hugging Face model folders built offline (random weights, home-made tokenizers) for tests.

`build_tiny_model(kind, dest)` writes a folder that passes `inspect_model_folder` and loads with
plain `from_pretrained`: kinds "encoder" (BertModel), "classifier" (BertForSequenceClassification,
labels negative/positive) and "causal-lm" (GPT2LMHeadModel with a byte-level BPE tokenizer).
`build_tiny_causal_lm(architecture, dest)` writes the other causal LM families users bring (Llama,
Qwen2, Qwen3, Mistral, Gemma, Phi-3), with widths llm-compressor's 4-bit groups divide.
"""

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizerFast,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2TokenizerFast,
    Gemma2Config,
    GemmaConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
)
from transformers import AutoModelForCausalLM

TINY_KINDS = ("encoder", "classifier", "causal-lm")
CLASSIFIER_LABELS = ("negative", "positive")
# Ten times transformers' default: with 0.02 a tiny model's outputs are nearly uniform, and
# quantization error would be invisible to the fidelity tests.
INIT_RANGE = 0.2

_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = (
    "the a an of to and in is it that for on with as was at by be this are from or have not but you we "
    "they he she i my your our his her their what which who when where how why all can will would there "
    "one two three time year day people way good new first last long great little own other old right big "
    "high small large next early young important few public bad same able model data run test fast slow "
    "please call back order price bank rate city team game food water book film phone help service"
).split()
SAMPLE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back when you have a minute.",
    "The central bank left interest rates unchanged this year.",
    "A binary search runs in logarithmic time on a sorted array.",
    "Our team won the game after a long and difficult season.",
    "This phone is great, but the battery life could be better.",
    "Add the flour slowly and stir until the batter is smooth.",
    "Where is the nearest train station, and how far is it?",
]


def _bert_tokenizer() -> BertTokenizerFast:
    characters = [chr(code) for code in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?'\"-:;()%$€@/")
    vocab = _SPECIAL + _WORDS + characters + [f"##{char}" for char in characters]
    # transformers 5 takes the vocabulary itself (`vocab_file=` is silently ignored, leaving only
    # the special tokens, so every word would be [UNK]).
    return BertTokenizerFast(vocab={token: index for index, token in enumerate(dict.fromkeys(vocab))}, do_lower_case=True)


def _gpt2_tokenizer() -> GPT2TokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(SAMPLE_TEXTS * 4, trainer=trainer)
    return GPT2TokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )


def _bert_config(vocab_size: int, hidden_size: int, **extra) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=128,
        initializer_range=INIT_RANGE,
        **extra,
    )


def build_tiny_model(kind: str, dest: Path, hidden_size: int = 32) -> Path:
    """Writes a tiny model folder of `kind` to `dest` (created if needed) and returns `dest`.

    A larger `hidden_size` makes the weights outweigh the fixed overhead of an ONNX file.
    """
    if kind not in TINY_KINDS:
        raise ValueError(f"kind must be one of {TINY_KINDS}, not {kind!r}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if kind == "causal-lm":
        tokenizer = _gpt2_tokenizer()
        eos = tokenizer.eos_token_id
        config = GPT2Config(
            vocab_size=len(tokenizer), n_positions=128, n_embd=hidden_size, n_layer=2, n_head=2, initializer_range=INIT_RANGE,
            bos_token_id=eos, eos_token_id=eos,
        )
        model = GPT2LMHeadModel(config)
    else:
        tokenizer = _bert_tokenizer()
        if kind == "encoder":
            model = BertModel(_bert_config(len(tokenizer), hidden_size))
        else:
            labels = dict(enumerate(CLASSIFIER_LABELS))
            config = _bert_config(
                len(tokenizer), hidden_size, num_labels=2, id2label=labels, label2id={name: i for i, name in labels.items()}
            )
            model = BertForSequenceClassification(config)
    model.eval().save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest


# Hidden 128 and FFN 256: multiples of the 32-weight groups the 4-bit tests use.
_CAUSAL_LM_CONFIGS = {
    "llama": LlamaConfig,
    "qwen2": Qwen2Config,
    "qwen3": Qwen3Config,
    "mistral": MistralConfig,
    "gemma": GemmaConfig,
    "gemma2": Gemma2Config,
    "phi3": Phi3Config,
}
CAUSAL_LM_ARCHITECTURES = tuple(_CAUSAL_LM_CONFIGS)


def build_tiny_causal_lm(architecture: str, dest: Path, layers: int = 2) -> Path:
    """A tiny random causal LM of `architecture` (see CAUSAL_LM_ARCHITECTURES), with the GPT-2-style tokenizer."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tokenizer = _gpt2_tokenizer()
    eos = tokenizer.eos_token_id
    config = _CAUSAL_LM_CONFIGS[architecture](
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=256, initializer_range=INIT_RANGE,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
    )
    model = AutoModelForCausalLM.from_config(config)
    model.eval().save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest
