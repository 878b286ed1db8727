"""Dataset versions: labelling rows, or uploading a revised file, makes a new immutable version of a
dataset (a new row and file), so a job that recorded a dataset id always reads the rows it read."""

import json
from pathlib import Path

from sqlalchemy.orm import Session

from app.core.errors import Invalid
from app.core.storage import Storage, sha256_of
from app.datasets import repository
from app.datasets.orm import Dataset
from app.datasets.schemas import RowLabel
from app.datasets.service import REVISE_AT_THE_SITE, add_version, get_dataset, require_rows_here
from workers.engine.evaluation.dataset_format import iter_rows


def _checked_labels(labels: list[RowLabel], num_rows: int) -> dict[int, str | None]:
    problems, by_row = [], {}
    for position, item in enumerate(labels):
        loc = ["body", "labels", position]
        if item.row >= num_rows:
            problems.append({"loc": [*loc, "row"], "msg": f"row {item.row} is past the last row ({num_rows - 1})"})
        elif item.row in by_row:
            problems.append({"loc": [*loc, "row"], "msg": f"row {item.row} is labelled twice"})
        by_row[item.row] = item.label
    if problems:
        raise Invalid(f"The labels do not fit the dataset: {problems[0]['msg']}.", errors=problems)
    return by_row


def label_rows(
    session: Session, storage: Storage, tenant_id: str, dataset_id: str, labels: list[RowLabel]
) -> Dataset:
    """The next version of the dataset: its rows with these labels set (or removed, for a null label)."""
    parent = get_dataset(session, tenant_id, dataset_id)
    require_rows_here(parent, "labelled here", REVISE_AT_THE_SITE.format(site=parent.site))
    by_row = _checked_labels(labels, parent.num_rows)
    stem = Path(parent.filename).stem
    with storage.scratch() as scratch:
        path = scratch / f"{stem}.jsonl"
        with path.open("w", encoding="utf-8") as out:
            for index, (_line, row) in enumerate(iter_rows(storage.local_copy(parent.storage_key))):
                if index in by_row:
                    row = {**row, "label": by_row[index]}
                out.write(json.dumps({key: value for key, value in row.items() if value is not None}) + "\n")
        version = repository.latest_version(session, parent.lineage_id) + 1
        filename = f"{stem}.v{version}.jsonl"
        return add_version(
            session, storage, tenant_id, parent, path, filename, parent.name, path.stat().st_size, sha256_of(path)
        )


def list_versions(session: Session, tenant_id: str, dataset_id: str) -> list[Dataset]:
    dataset = get_dataset(session, tenant_id, dataset_id)
    return repository.lineage(session, tenant_id, dataset.lineage_id)
