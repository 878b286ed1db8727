"""Trains the project's small real causal LM, the one that LLM quality figures come from, and caches it.

No machine here can reach a model hub, so the LLM benchmarks need a language model that has learnt
real text: random weights have no quality to lose. This trains a Llama-architecture model of about
30M parameters on the offline corpus of `benchmarks/lm_corpus.py`, with a byte-level BPE tokenizer
trained on the same text, for a fixed time budget (30 minutes on 2 CPU cores by default, about 3 on
a GPU), then writes a transformers folder plus:

- `heldout.txt`: the held-out texts (one per line), which the model never saw;
- `calibration.txt`: training texts for calibration and recovery;
- `training.json`: steps, tokens seen, held-out perplexity, and the unigram model's perplexity on the
  same held-out tokens. The model proves something only if it is far below the unigram figure.

    .venv/bin/python benchmarks/make_tiny_lm.py [--minutes 30] [--out benchmarks/.cache/tiny-lm]

A cached folder whose training.json exists is reused unless --force is given.
"""

import argparse
import json
import math
import random
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.lm_corpus import lm_corpus  # noqa: E402

DEFAULT_DIR = Path(__file__).resolve().parent / ".cache" / "tiny-lm"
VOCAB_SIZE = 8192
SEQUENCE = 256
BATCH = 16
CALIBRATION_TEXTS = 1024


def _train_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=1024
    )


def _token_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    ids = []
    for start in range(0, len(texts), 2048):
        for row in tokenizer(texts[start:start + 2048], add_special_tokens=False)["input_ids"]:
            ids.extend(row)
            ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def _model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


@torch.no_grad()
def _perplexity(model, stream: torch.Tensor, device: str) -> float:
    model.eval()
    usable = (len(stream) - 1) // SEQUENCE * SEQUENCE
    windows = stream[: usable + 1]
    total_nll, total_tokens = 0.0, 0
    for start in range(0, usable, SEQUENCE * BATCH):
        chunk = windows[start: start + SEQUENCE * BATCH + 1]
        count = (len(chunk) - 1) // SEQUENCE
        inputs = chunk[: count * SEQUENCE].view(count, SEQUENCE).to(device)
        labels = chunk[1: count * SEQUENCE + 1].view(count, SEQUENCE).to(device)
        logits = model(input_ids=inputs).logits.float()
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")
        total_nll += nll.item()
        total_tokens += labels.numel()
    model.train()
    return math.exp(total_nll / total_tokens)


def _unigram_perplexity(train: torch.Tensor, heldout: torch.Tensor, vocab: int) -> float:
    """Add-one smoothed unigram model from the training tokens, on the held-out tokens."""
    counts = Counter(train.tolist())
    total = len(train) + vocab
    nll = -sum(math.log((counts.get(token, 0) + 1) / total) for token in heldout[1:].tolist())
    return math.exp(nll / (len(heldout) - 1))


def train(out: Path, minutes: float, device: str, seed: int) -> dict:
    random.seed(seed)
    torch.manual_seed(seed)
    started = time.perf_counter()
    train_texts, heldout_texts = lm_corpus()
    print(f"corpus: {len(train_texts)} training texts, {len(heldout_texts)} held-out", flush=True)
    tokenizer = _train_tokenizer(train_texts)
    train_stream = _token_stream(tokenizer, train_texts)
    heldout_stream = _token_stream(tokenizer, heldout_texts)
    print(f"tokens: {len(train_stream):,} training, {len(heldout_stream):,} held-out", flush=True)
    model = _model(tokenizer).to(device)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"model: {parameters / 1e6:.1f}M parameters", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    budget_s = minutes * 60
    warmup = 30
    windows = (len(train_stream) - 1) // SEQUENCE
    step, tokens_seen, train_started = 0, 0, time.perf_counter()
    model.train()
    while True:
        elapsed = time.perf_counter() - train_started
        if elapsed >= budget_s:
            break
        # Cosine decay over the time budget rather than a step count: the budget is what is fixed.
        progress = elapsed / budget_s
        lr = 1e-3 * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, windows, (BATCH,)) * SEQUENCE
        batch = torch.stack([train_stream[s: s + SEQUENCE + 1] for s in starts.tolist()]).to(device)
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        tokens_seen += BATCH * SEQUENCE
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.3f}, lr {lr:.2e}, {elapsed / 60:.1f} min", flush=True)
    # Stored in bf16, as LLM checkpoints are published, so a compressed artifact compares with the bytes
    # users start from; the held-out figure is that of the bf16 weights.
    model = model.to(torch.bfloat16).float()
    heldout_ppl = _perplexity(model, heldout_stream, device)
    unigram_ppl = _unigram_perplexity(train_stream, heldout_stream, len(tokenizer))
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "heldout.txt").write_text("\n".join(heldout_texts) + "\n", encoding="utf-8")
    rng = random.Random(seed)
    calibration = rng.sample([t for t in train_texts if len(t.split()) >= 12], CALIBRATION_TEXTS)
    (out / "calibration.txt").write_text("\n".join(calibration) + "\n", encoding="utf-8")
    summary = {
        "parameters": parameters,
        "steps": step,
        "tokens_seen": tokens_seen,
        "training_tokens": len(train_stream),
        "heldout_tokens": len(heldout_stream),
        "heldout_perplexity": round(heldout_ppl, 2),
        "unigram_heldout_perplexity": round(unigram_ppl, 2),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def ensure_tiny_lm(out: Path = DEFAULT_DIR, minutes: float = 30.0, force: bool = False) -> Path:
    """The cached model's folder, trained first if it is not there yet."""
    if force or not (out / "training.json").is_file():
        train(out, minutes, "cuda" if torch.cuda.is_available() else "cpu", seed=0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="Training time budget.")
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--force", action="store_true", help="Retrain even if a cached model exists.")
    args = parser.parse_args()
    folder = ensure_tiny_lm(args.out, args.minutes, args.force)
    print(json.dumps(json.loads((folder / "training.json").read_text()), indent=2))


if __name__ == "__main__":
    main()
