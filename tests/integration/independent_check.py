"""Measures a compressed artifact's fidelity with plain onnxruntime and transformers: no compresso import.

Usage: python independent_check.py ARTIFACT_DIR ORIGINAL_DIR DATASET_JSONL TASK SEQ_LEN BATCH MAX_SAMPLES
Prints a JSON object with the fidelity figures, computed the way the report defines them.
"""

import json
import sys

import numpy as np
import onnxruntime
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer


def main() -> None:
    artifact_dir, original_dir, dataset, task, seq_len, batch, max_samples = sys.argv[1:8]
    seq_len, batch, max_samples = int(seq_len), int(batch), int(max_samples)
    texts = [json.loads(line)["text"] for line in open(dataset, encoding="utf-8") if line.strip()][:max_samples]
    tokenizer = AutoTokenizer.from_pretrained(artifact_dir)
    model_class = AutoModelForSequenceClassification if task == "text-classification" else AutoModel
    original = model_class.from_pretrained(original_dir).eval()
    session = onnxruntime.InferenceSession(f"{artifact_dir}/model.onnx", providers=["CPUExecutionProvider"])
    input_names = {i.name for i in session.get_inputs()}
    cosines, agreements, kls = [], [], []
    for start in range(0, len(texts), batch):
        encoded = tokenizer(
            texts[start : start + batch], padding=True, truncation=True, max_length=seq_len, return_tensors="np"
        )
        feeds = {name: encoded[name].astype(np.int64) for name in input_names}
        result = session.run(None, feeds)[0]
        with torch.no_grad():
            reference = original(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        if task == "text-classification":
            ref_logits = reference.logits.numpy()
            agreements += list(ref_logits.argmax(-1) == result.argmax(-1))
            p = torch.log_softmax(torch.from_numpy(ref_logits), -1)
            q = torch.log_softmax(torch.from_numpy(result), -1)
            kls += list((p.exp() * (p - q)).sum(-1).numpy())
        else:
            mask = encoded["attention_mask"][..., None].astype(np.float32)
            a = (reference.last_hidden_state.numpy() * mask).sum(1) / mask.sum(1)
            b = (result * mask).sum(1) / mask.sum(1)
            cosines += list((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))
    if task == "text-classification":
        out = {"top1_agreement": float(np.mean(agreements)), "mean_kl": float(np.mean(kls))}
    else:
        out = {"mean_cosine": float(np.mean(cosines)), "p5_cosine": float(np.percentile(cosines, 5))}
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("app", "workers", "compresso"))
    out["compresso_modules_imported"] = leaked
    print(json.dumps(out))


if __name__ == "__main__":
    main()
