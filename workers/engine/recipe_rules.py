"""Which orders of techniques make sense, as data: a recipe whose steps fit by format can still be
incoherent (entropy coding with nothing quantized, pruning a model already quantized), and the
user is told why at submit time instead of getting a useless artifact hours later.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class NeedsEarlier:
    """`technique` needs one of `any_of` somewhere before it."""

    technique: str
    any_of: frozenset[str]
    reason: str


@dataclass(frozen=True)
class NotAfter:
    """`technique` may not come after any of `earlier`."""

    technique: str
    earlier: frozenset[str]
    reason: str


_QUANTIZERS = frozenset({"quantize", "cluster"})

NEEDS_EARLIER = (
    NeedsEarlier(
        "huffman",
        _QUANTIZERS,
        "huffman entropy-codes the integer symbols that quantize or cluster produce; on float weights it "
        "saves almost nothing, so put a quantize or cluster step before it",
    ),
)

NOT_AFTER = (
    NotAfter(
        "prune",
        _QUANTIZERS,
        "prune before quantizing: pruning chooses weights by their float values and quantization then fits "
        "its scales to what is left; pruning a quantized model would waste the scales and is refused",
    ),
    NotAfter(
        "low_rank",
        _QUANTIZERS,
        "factorise before quantizing: the SVD needs the float weights, and quantize or cluster must see the "
        "final layers to fit their scales or codebooks",
    ),
    NotAfter(
        "distill",
        _QUANTIZERS,
        "distil before quantizing: training needs float weights, and the quantizer must see the trained "
        "student to fit its scales",
    ),
    NotAfter(
        "cluster",
        frozenset({"quantize"}),
        "cluster and quantize both map weights to a small set of values; choose one of them",
    ),
    NotAfter(
        "quantize",
        frozenset({"cluster"}),
        "cluster and quantize both map weights to a small set of values; choose one of them",
    ),
)


def order_problems(techniques: list[str]) -> list[tuple[int, str]]:
    """(step index, message) for every step placed where it cannot work."""
    problems = []
    for index, name in enumerate(techniques):
        before = techniques[:index]
        for rule in NEEDS_EARLIER:
            if rule.technique == name and not rule.any_of.intersection(before):
                problems.append((index, f"{name!r} needs a {' or '.join(sorted(rule.any_of))} step before it: {rule.reason}"))
        for rule in NOT_AFTER:
            if rule.technique != name:
                continue
            offenders = [position for position, other in enumerate(before) if other in rule.earlier]
            if offenders:
                first = offenders[0]
                problems.append(
                    (index, f"{name!r} cannot come after step {first} ({techniques[first]!r}): {rule.reason}")
                )
    return problems
