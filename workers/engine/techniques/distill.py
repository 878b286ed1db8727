"""The `distill` technique: trains a smaller student (fewer layers, a narrower FFN, or an uploaded
model) to reproduce the teacher, with the shared loop of `workers.engine.training`.

Measured on all-MiniLM-L6-v2 (6 layers) -> 3-layer students, trained on 250 builtin sentences and
scored on the other 70 (mean cosine of mean-pooled embeddings; torch, 1 thread, shared CPU):
- layer choice matters most: [0, 2, 4] (every other layer) starts at 0.39 and reaches 0.62-0.65;
  [0, 4, 5], which greedy removal picks, starts at 0.72 and reaches 0.84 (lr 2e-4, 160-170 steps);
- lr 1e-3 overfits from the better start (0.826 vs 0.838), augmentation adds ~0.003-0.007, and
  student dropout or cosine instead of MSE on hidden states changed nothing measurable;
- 3 layers run 1.9-2.2x faster than 6 at batch 32 x 128 tokens.
250 texts do not reach 0.93: more (distinct) texts are the lever left; see the step's details.

On the benchmark's corpus (685 training sentences, 293 held out; [0, 4, 5], default training, 1 thread):
held-out 0.8925 with 0.967 on the training texts, so the student overfits. Measured 2026-11-30, none
of these closed the gap: hidden_state_weight 0 (pooled cosine alone) 0.8865; lr 1e-4 for 6 epochs
0.890; 1,703 more sentences from the standard library's docstrings, no augmentation, 0.894.
What helped is new contexts for the corpus's own words: `augment: splice` (the start of one text
joined to the end of another) gave 0.9016 with 4 copies per text, 0.9086 with 8 and 0.9098 with 16
copies for 2 epochs (356 s on 2 cores), and 0.9145 with 20 copies for 2 epochs at lr 3e-4 (the
distill-half preset, 413 s), against 0.8942 for 6 masked, dropped or cut copies ("mixed" before it
could splice) and 0.9073 for 16 "mixed" copies that may splice.

Measured 2026-11-30 (session 7), same corpus, splice copies, in-process with the shared loop: the weight
of the hidden-state MSE is the next lever. With 4 copies for 2 epochs at lr 3e-4, held-out fidelity was
0.8940 at weight 0.3, 0.8964 at 1, 0.8995 at 3, 0.9029 at 10, 0.9043 at 30 and 0.9044 at 100; the hidden
states give every token a target where the pooled cosine gives one per text. At weight 30, training
longer pays: lr 5e-4 gave 0.9064 for 2 epochs, 0.9130 for 4 and 0.9164 for 8 (0.989 on its training
texts); 8 copies for 4 epochs 0.9180, 20 copies for 2 epochs 0.9207 (488 s), 40 copies for 2 epochs
0.9248 (975 s; copies were capped at 20 before it).
Tried without a gain, at weight 1 (against 0.8964): the layer sets [0, 3, 5] 0.8796, [1, 4, 5] 0.8942,
[0, 2, 5] 0.8779 and [0, 1, 5] 0.8747; replacing 15% or 30% of the tokens by nearest neighbours in
the embedding space 0.8958 / 0.8934; an exponential moving average of the weights 0.8918.
At weight 30 (against 0.9043): a token-level cosine on the last layer 0.9043; MiniLMv2's attention-
relation loss (Q-Q, K-K, V-V) on the last layer 0.9036, on every layer 0.9005; student dropout for 8
epochs 0.9025 (0.9164 without).

Measured 2026-11-30 (session 8), same setup, 4 copies for 2 epochs at weight 30 unless said: the curve
of training length flattens. 50 copies for 4 epochs (8,424 steps, 1,283 s) reached 0.9277: +0.003 over
40 copies for 2 epochs (0.9248) for 2.4x the steps, so length alone will not reach 0.93. No gain, against
0.9064 (random batches): the hidden-state MSE averaged per text rather than per token 0.9056; lr 1e-3
0.9048. Against 0.9053 (length-grouped batches): batches of 32 at lr 7e-4 0.9026; the last layer's MSE
weighted 3x 0.9051; twice the lr for the first layer 0.9069; training the token embeddings too 0.9065,
in 40% more time, and both together 0.9071; copies joining two whole texts instead of splicing 0.9032.
Dropping layers in two stages (6 -> 4 layers [0, 3, 4, 5], trained, then its second layer removed and
trained again) gave 0.9114, where 4 epochs straight to [0, 4, 5] gave 0.9124 in less time. bf16
autocast left fidelity unchanged and saved 10%; torch.compile saved nothing.

Measured 2026-11-30 (session 9), same setup (0.9053 for 4 copies, 2 epochs, seed 0; 0.9058 for seed 1):
what the student misses is text unlike its training texts. Held-out texts whose tokens all occur in
the 685 training texts (which use 2,781 of the 30,522 token ids) scored 0.932; those with over 10%
unseen tokens 0.867-0.873; the builtin sentences (reviews, chat, German, French, Spanish) 0.863
against 0.926 for the language reference's prose. Nothing cheap closed that. No gain: three times the
copies for the builtin sentences 0.9053; a cropped or a concatenated copy in place of a splice 0.9054 /
0.9060; weight decay 0.1 0.9051; the hidden-state weight annealed from 30 to 0 or 3 0.9044 / 0.9046.
Worse: attention frozen 0.9002; the first student layer matched to teacher layer 0's output instead of
layer 3's 0.9019; that layer initialised as the mean of teacher layers 0-3 0.8756, or as layer 0 plus
0.3x their differences from it (LaCo) 0.8760; 15% or 30% of each copy's tokens replaced by random
Latin-script vocabulary tokens 0.9027 / 0.9012. Two extra copies with 20% random tokens gave 0.9103
against 0.9091 for two more plain splice copies (noise). Averaging the weights of two seeds (a model
soup) gave 0.9085 at 4 copies, but only 0.9223 against 0.9206 / 0.9205 at 20 copies for 2 epochs,
where twice the copies in one run gave 0.9248: more data is the cheaper use of the time. 3,000 or
10,000 extra texts of 1-3 random vocabulary words gave 0.9079 in 62 s / 0.9088 in 134 s, against 0.9091
in 84 s for two more splice copies. bf16 autocast on a CPU with AMX left fidelity unchanged and was 13%
slower (52 s against 46 s). The small gains fade with more training: at 20 copies for 2 epochs (0.9206),
the first layer's lr doubled, the token embeddings trained and 3,000 word texts, all together, gave
0.9204 in 672 s against 371 s (runs side by side, one thread each); lr 7e-4 gave 0.9200.

Measured 2026-11-30 (session 10), same setup: other real text is worth less than spliced copies of the
job's own. 2,000 sentences from Debian's fortune files (1,000 English, 500 German, 500 Spanish) added
to the 685 texts, 4 copies each for 2 epochs (1,650 steps), gave 0.9128, where 20 copies of the 685
alone for 2 epochs (1,798 steps) gave 0.9206. Fresh copies in place of repeated epochs changed nothing:
40 copies for 1 epoch (1,699 steps) 0.9207, 8 copies for 1 epoch 0.9037 (against 0.9053 for 4 copies
for 2). What sets held-out fidelity here is the number of steps, with each doubling gaining less:
0.9207 at 1,699 steps, 0.9248 at 3,398 (40 copies, 2 epochs), 0.9266 at 5,097 (the preset, 14 minutes),
0.9277 at 8,424 (50 copies, 4 epochs), about +0.0022 per doubling at the end. Then measured
through the benchmark: 50 copies for 8 epochs (16,848 steps) gave 0.9282 in a 2,905 s job, +0.0016 over
the preset for 3.5x the time (benchmarks/results/engine_bench_distill_long.md); 0.93 is further still.
"""

import copy
import logging

import torch

from workers.engine.config_folder import derive_config_dir
from workers.engine.devices import module_device, to_device
from workers.engine.errors import EngineUserError
from workers.engine.techniques.distill_config import DistillConfig
from workers.engine.state import ModelState, StepContext
from workers.engine.students import (
    block_ends,
    check_layer_indices,
    fewer_layers,
    ffn_importance,
    layer_count,
    load_uploaded_student,
    narrower_ffn,
    choose_layers,
)
from workers.engine.training.data import collate, tokenise
from workers.engine.training.loop import recover
from workers.engine.training.losses import UNLABELLED

logger = logging.getLogger(__name__)

# Texts whose FFN activations rank the neurons a narrower student keeps.
_IMPORTANCE_TEXTS = 256
_IMPORTANCE_BATCH = 32
# Texts on which each candidate layer subset is scored when student_layers is a count.
_LAYER_CHOICE_TEXTS = 64


def _parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _build_student(config: DistillConfig, state: ModelState, context: StepContext):
    """The student, the teacher layer each student layer is matched to (None: the default map), and
    the report figures describing it."""
    teacher = state.torch_model
    if config.student_layers is not None or config.student_depth is not None:
        teacher_layers = layer_count(teacher)
        indices = config.student_layers
        if config.student_depth is not None:
            indices = max(1, round(config.student_depth * teacher_layers))
        check_layer_indices(indices, teacher_layers)
        if isinstance(indices, int):
            texts = context.calibration_texts[:_LAYER_CHOICE_TEXTS]
            examples = tokenise(context.tokenizer, texts, None, context.sequence_length)
            batch = to_device(collate(examples, context.tokenizer.pad_token_id), module_device(teacher))
            indices = choose_layers(teacher, state.task, indices, batch)
        return fewer_layers(teacher, indices), block_ends(indices, teacher_layers), {
            "student_kind": "fewer_layers", "student_layers": indices,
        }
    if config.student_width is not None:
        student = copy.deepcopy(teacher)
        texts = context.calibration_texts[:_IMPORTANCE_TEXTS]
        examples = tokenise(context.tokenizer, texts, None, context.sequence_length)
        pad_id = context.tokenizer.pad_token_id
        device = module_device(teacher)
        batches = (
            to_device(collate(examples[start:start + _IMPORTANCE_BATCH], pad_id), device)
            for start in range(0, len(examples), _IMPORTANCE_BATCH)
        )
        size = narrower_ffn(student, config.student_width, ffn_importance(student, batches))
        return student, None, {
            "student_kind": "narrower_ffn", "student_width": config.student_width, "student_ffn_size": size,
        }
    folder = context.uploaded_model("student_model_id", config.student_model_id, "student")
    student = load_uploaded_student(folder, teacher, state.task, context.tokenizer)
    return student, None, {"student_kind": "uploaded", "student_model_id": config.student_model_id}


def apply_distill(config: DistillConfig, state: ModelState, context: StepContext) -> ModelState:
    if state.torch_model is None:
        raise ValueError("distill needs a torch model as the teacher.")
    if not context.calibration_texts:
        raise EngineUserError("distill needs texts to train on: upload a dataset or use the builtin sample.")
    labels = context.calibration_labels if state.task == "text-classification" else None
    has_labels = labels is not None and any(label != UNLABELLED for label in labels)
    if state.task == "text-classification" and config.alpha == 1 and not has_labels:
        raise EngineUserError(
            "alpha 1 trains on the dataset's labels alone, but no text has a label; lower alpha to learn from "
            "the teacher, or upload a labelled dataset."
        )
    teacher = state.torch_model
    student, layer_map, details = _build_student(config, state, context)
    stats = recover(
        student, teacher, state.task, context.calibration_texts, labels, context.tokenizer, config,
        context.sequence_length, context.on_progress, layer_map=layer_map,
    )
    context.placement["training"] = str(module_device(student))
    config_dir = derive_config_dir(student, state.config_dir, context.work_dir / "student")
    context.details.update(
        details
        | {
            "parameters_teacher": _parameters(teacher),
            "parameters_student": _parameters(student),
            "examples_used": stats.examples_used,
            "original_examples": stats.original_examples,
            "labelled_examples": sum(label != UNLABELLED for label in labels) if has_labels else 0,
            "augment": config.augment,
            "augment_copies": config.augment_copies if config.augment != "none" else 0,
            "steps": stats.steps,
            "epochs": stats.epochs,
            "initial_loss": round(stats.initial_loss, 6),
            "final_loss": round(stats.final_loss, 6),
            "training_seconds": stats.seconds,
        }
        | ({"selection": stats.selection} if stats.selection else {})
    )
    logger.info(
        "distill: %s student, %d -> %d parameters, %d examples (%d texts), loss %.4f -> %.4f",
        details["student_kind"], context.details["parameters_teacher"], context.details["parameters_student"],
        stats.examples_used, stats.original_examples, stats.initial_loss, stats.final_loss,
    )
    return ModelState(task=state.task, config_dir=config_dir, torch_model=student)
