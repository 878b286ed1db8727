"""`compresso site add-dataset`, run on a site's host: checks a dataset file as an upload is checked,
keeps it in the site's folder (COMPRESSO_SITE_DATA_DIR) and registers its metadata with the server.
The rows never leave the host."""

import argparse
import hashlib
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from app.config import get_settings
from app.core.errors import Invalid
from app.core.storage import CHUNK_BYTES
from app.datasets.parsing import DatasetInfo, inspect_dataset
from app.sites.paths import site_dataset_path, site_datasets_dir
from app.sites.schemas import SITE_NAME_RULE
from compresso.cli import EXIT_OK, Output, common_options
from compresso.client import Client
from workers.engine.evaluation.dataset_format import DATASET_SUFFIXES
from workers.engine.federated.config import SITE_NAME

SITE_COMMAND = "site"


@dataclass(frozen=True)
class PlacedDataset:
    path: Path
    sha256: str
    size_bytes: int
    info: DatasetInfo
    # False when a file with the same content was there already: another dataset of the site uses it.
    is_new: bool


def site_name(value: str) -> str:
    """argparse's type for --site."""
    if not SITE_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r}: {SITE_NAME_RULE}")
    return value


def copy_hashing(source: Path, dest: Path) -> str:
    digest = hashlib.sha256()
    with source.open("rb") as reader, dest.open("wb") as writer:
        while chunk := reader.read(CHUNK_BYTES):
            digest.update(chunk)
            writer.write(chunk)
    return digest.hexdigest()


def place_dataset(source: Path, site_data_dir: Path, site: str) -> PlacedDataset:
    """Copies `source` into the site's folder under its hash, once it has passed the upload checks. The
    copy is written beside its final name and renamed, so a reader never sees half a file."""
    if not source.is_file():
        raise FileNotFoundError(f"No dataset file at {source}.")
    if not source.name.lower().endswith(DATASET_SUFFIXES):
        raise ValueError(f"{source} is not a {' or '.join(DATASET_SUFFIXES)} file.")
    folder = site_datasets_dir(site_data_dir, site)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{uuid.uuid4().hex}.partial{source.suffix.lower()}"
    try:
        sha256 = copy_hashing(source, partial)
        try:
            info = inspect_dataset(partial)
        except Invalid as exc:
            raise ValueError(f"{source}: {exc.detail}") from None
        target = site_dataset_path(site_data_dir, site, sha256, source.name)
        is_new = not target.exists()
        if is_new:
            os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return PlacedDataset(path=target, sha256=sha256, size_bytes=target.stat().st_size, info=info, is_new=is_new)


def add_dataset(client: Client, args: argparse.Namespace, out: Output) -> int:
    source = Path(args.file)
    placed = place_dataset(source, get_settings().site_data_dir, args.site)
    try:
        dataset = client.register_site_dataset(
            args.site, name=args.name or source.stem, filename=source.name, sha256=placed.sha256,
            num_rows=placed.info.num_rows, num_labelled=placed.info.num_labelled, columns=placed.info.columns,
            size_bytes=placed.size_bytes,
        )
    except BaseException:
        if placed.is_new:  # a copy no registered dataset points at
            placed.path.unlink(missing_ok=True)
        raise
    if not out.as_json:
        print(f"Registered {dataset.name!r} ({dataset.num_rows} rows) as held by site {args.site}; its rows stay in "
              f"{placed.path}.", file=sys.stderr)
    out.emit(dataset, dataset.id)
    return EXIT_OK


def add_site_commands(commands: argparse._SubParsersAction) -> None:
    site = commands.add_parser(SITE_COMMAND, help="on a site's host: keep datasets there and register them")
    group = site.add_subparsers(dest="site_command", required=True)
    add = group.add_parser(
        "add-dataset", parents=[common_options()],
        help="check a .jsonl or .csv file, keep it in COMPRESSO_SITE_DATA_DIR and register it (metadata only); "
        "prints the dataset's id",
    )
    add.add_argument("file", help="the dataset file: a .jsonl or .csv with column text")
    add.add_argument("--site", required=True, type=site_name, help="the site's name, as its worker is started with")
    add.add_argument("--name", help="default: the file name without its suffix")
    add.set_defaults(client_handler=add_dataset)
