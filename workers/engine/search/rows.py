"""Splits a goal job's rows in two: the search calibrates and scores candidates on one part, and the
chosen model is measured on the other, so its reported fidelity is on text the search never saw."""

import random

from workers.engine.errors import EngineUserError
from workers.engine.evaluation.data import EvalDataset

# Fewer rows than this on either side give a fidelity too noisy to choose or to report by.
MIN_ROWS_PER_PART = 16


def _take(dataset: EvalDataset, indices: list[int]) -> EvalDataset:
    def pick(values: list | None) -> list | None:
        return None if values is None else [values[index] for index in indices]

    return EvalDataset(
        texts=[dataset.texts[index] for index in indices], text_pairs=pick(dataset.text_pairs),
        labels=pick(dataset.labels), slices=pick(dataset.slices), source=dataset.source,
    )


def split_sizes(total: int, evaluation_rows: int, search_rows: int) -> tuple[int, int]:
    """(rows searched, rows evaluated) out of `total`: with fewer rows than both want, each gets its share."""
    wanted = evaluation_rows + search_rows
    searched = search_rows if total >= wanted else round(total * search_rows / wanted)
    evaluated = min(evaluation_rows, total - searched)
    if min(searched, evaluated) < MIN_ROWS_PER_PART:
        raise EngineUserError(
            f"A goal needs at least {2 * MIN_ROWS_PER_PART} rows ({MIN_ROWS_PER_PART} to search on and "
            f"{MIN_ROWS_PER_PART} held out to measure the result); the dataset gives {total}: upload more rows."
        )
    return searched, evaluated


def split_rows(dataset: EvalDataset, evaluation_rows: int, search_rows: int, seed: int) -> tuple[EvalDataset, EvalDataset]:
    """(search part, evaluation part), drawn at random with `seed` so that a sorted file splits fairly."""
    total = len(dataset)
    searched, evaluated = split_sizes(total, evaluation_rows, search_rows)
    order = list(range(total))
    random.Random(seed).shuffle(order)
    return _take(dataset, sorted(order[:searched])), _take(dataset, sorted(order[searched:searched + evaluated]))
