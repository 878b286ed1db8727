"""Where a site keeps its datasets, on the site's own host: `compresso site add-dataset` writes
them there, and the site's worker reads them there. Nothing here is central storage."""

from pathlib import Path


def site_datasets_dir(site_data_dir: Path, site: str) -> Path:
    """The folder of a site's datasets."""
    return site_data_dir / site / "datasets"


def site_dataset_path(site_data_dir: Path, site: str, sha256: str, filename: str) -> Path:
    """The file of a site-held dataset, keyed by its content hash (its original suffix kept, so the
    parser knows its format)."""
    return site_datasets_dir(site_data_dir, site) / f"{sha256}{Path(filename).suffix.lower()}"


def site_storage_key(site: str, sha256: str, filename: str) -> str:
    """What a site-held dataset's row records as its storage key: a reference to the site's copy, which
    no central storage backend resolves."""
    return f"site://{site}/{sha256}{Path(filename).suffix.lower()}"
