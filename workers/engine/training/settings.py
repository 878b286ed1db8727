"""The training params shared by `distill` and by every technique that recovers a damaged model
(pruning, low-rank, clustering): one definition, embedded in their configs."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Kinds of transfer-set augmentation (workers.engine.training.data applies them to token ids).
AugmentKind = Literal["none", "token_mask", "token_dropout", "span_deletion", "splice", "mixed"]
# How the texts trained on are chosen (workers.engine.training.selection).
SelectionKind = Literal["all", "random", "active"]

# Used when a config gives neither epochs nor max_steps: with the default augmentation (3x the
# texts) that is 12 passes over each text, where MiniLM's held-out fidelity had levelled off.
DEFAULT_EPOCHS = 4
MAX_EPOCHS = 100
MAX_STEPS = 100_000


class TrainingParams(BaseModel):
    """Fields only; subclasses add the model_config (strict, extra=forbid) they need."""

    epochs: int | None = Field(
        None,
        ge=1,
        le=MAX_EPOCHS,
        description=f"Passes over the (augmented) transfer set. Give this or max_steps; empty with "
        f"max_steps empty too: {DEFAULT_EPOCHS} epochs.",
    )
    max_steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="Optimizer steps in total, cycling over the data. Give this or epochs."
    )
    batch_size: int = Field(16, ge=1, le=256, description="Examples per optimizer step.")
    lr: float = Field(
        2e-4,
        gt=0,
        le=1,
        description="Peak learning rate of AdamW (linear warmup, then linear decay). On a few hundred texts, "
        "higher rates fit the training texts better but the others worse.",
    )
    temperature: float = Field(
        2.0, gt=0, le=100, description="Softens both output distributions before the KL term, which is scaled by T²."
    )
    alpha: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Classifiers only: weight of the cross-entropy on the dataset's labels; 1 - alpha weighs "
        "the KL to the teacher. Rows without a label use the KL term alone.",
    )
    # splice beat the other kinds for distillation (see the distill module), but for recoveries on
    # MiniLM it gained only 0.0012 (low-rank) and 0.0007 (50% unstructured pruning) over token_dropout,
    # 2 copies each (benchmarks/results/engine_bench_recovery_augment.md): too little to change a
    # default that classifiers and causal LMs share, where splice is unmeasured.
    augment: AugmentKind = Field(
        "token_dropout",
        description="Enlarges a small transfer set with altered copies of each text: token_mask replaces ~15% "
        "of the tokens by the mask token (tokenizers without one drop them instead), token_dropout drops "
        "~15% of the tokens, span_deletion removes one span of ~20% of the tokens, splice joins the start "
        "of the text to the end of another one, mixed picks one of those four per copy.",
    )
    augment_copies: int = Field(
        2,
        ge=0,
        le=50,
        description="Altered copies added per text when augment is not 'none'. More copies kept helping a "
        "distilled MiniLM (held-out fidelity 0.9207 with 20 spliced copies, 0.9248 with 40, 2 epochs each), "
        "with training time growing in proportion.",
    )
    # On all-MiniLM-L6-v2, weight 30 beat 1 wherever it was measured (held-out fidelity,
    # benchmarks/results/engine_bench_recovery_weight.md and the distill module): a 3-layer student
    # 0.9043 against 0.8964; recoveries after low-rank factorisation 0.9479 against 0.9337, after 50%
    # unstructured pruning 0.9638 against 0.9557, after pruning 45% of the neurons 0.9175 against
    # 0.9116, after removing 25% of the heads 0.9865 against 0.9817
    # (benchmarks/results/engine_bench_heads_recovery.md). The hidden states give every token a
    # target where the pooled cosine gives one per text.
    hidden_state_weight: float = Field(
        30.0,
        ge=0,
        le=100,
        description="Encoders only: weight of the MSE between each student layer's output and the teacher "
        "layer it stands for, next to the cosine distance of the mean-pooled embeddings.",
    )
    seed: int = Field(0, ge=0, description="Seeds shuffling, augmentation and initialisation, for repeatable runs.")
    selection: SelectionKind = Field(
        "all",
        description="Which texts of the dataset are trained on: all; random (max_examples of them); active "
        "(the max_examples on which the student is farthest from the teacher, near-duplicates by the teacher's "
        "embeddings passed over, chosen again every rescore_steps steps as the student learns). Augmented copies "
        "are made of the chosen texts only.",
    )
    max_examples: int | None = Field(
        None, ge=1, le=10_000_000, description="selection random or active: texts trained on at a time."
    )
    rescore_steps: int = Field(
        200, ge=10, le=MAX_STEPS, description="selection active: optimizer steps between two choices of the texts."
    )

    @model_validator(mode="after")
    def _at_most_one_length(self):
        if self.epochs is not None and self.max_steps is not None:
            raise ValueError("give epochs or max_steps, not both (leave the other empty)")
        if self.selection == "all" and self.max_examples is not None:
            raise ValueError("max_examples applies to selection random or active; set selection, or remove it")
        if self.selection != "all" and self.max_examples is None:
            raise ValueError(f"selection {self.selection!r} needs max_examples: how many texts to train on")
        return self

    def total_steps(self, num_examples: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        epochs = self.epochs if self.epochs is not None else DEFAULT_EPOCHS
        return epochs * -(-num_examples // self.batch_size)


class RecoverySettings(TrainingParams):
    """What another technique's config embeds as `recover: RecoverySettings | None`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# Quantization-aware training starts from the original's own weights, so it needs small steps: on MiniLM
# with 4-bit weights, lr 5e-5 reached 0.9932 held-out fidelity where 2e-4 reached 0.9887, and int8_static
# fell from 0.9896 untrained to 0.9883 at 2e-4 but rose to 0.9911 at 5e-5
# (benchmarks/results/engine_bench_qat2.md and engine_bench_qat3.md).
QAT_LR = 5e-5


class QatSettings(RecoverySettings):
    """The quantize step's `qat`: recovery training with a smaller default learning rate."""

    lr: float = Field(
        QAT_LR,
        gt=0,
        le=1,
        description="Peak learning rate of AdamW (linear warmup, then linear decay). Quantization-aware training "
        "starts from the original's weights: higher rates fit the training texts and lose on others.",
    )
