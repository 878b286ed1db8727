"""Real English text available offline, for training and measuring the project's tiny causal LM.

- Held out: the held-out half of `benchmarks/corpus.py` (the builtin sample and the Python language
  reference's prose). No training text contains one of these sentences.
- Training: the training half of that corpus, plus the prose paragraphs of the docstrings of the
  Python standard library and of the packages installed next to it (torch, transformers, numpy,
  SQLAlchemy and the rest): megabytes of edited technical English. They are read with `ast` from
  the source files on this machine, so nothing is downloaded.
"""

import ast
import re
import sys
from pathlib import Path

from benchmarks.corpus import split_corpus

# A docstring paragraph is kept when it reads as prose: mostly letters and spaces, and long enough.
_MIN_WORDS = 8
_MIN_PROSE_SHARE = 0.85
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
_CODE_MARKERS = re.compile(r">>>|::|\$ |^\s*[-=~]{3,}", re.MULTILINE)


def _stdlib_dir() -> Path:
    return Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"


def _docstrings(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node)
            if text:
                found.append(text)
    return found


def _prose_paragraphs(docstring: str) -> list[str]:
    kept = []
    for paragraph in re.split(r"\n\s*\n", docstring):
        if _CODE_MARKERS.search(paragraph):
            continue
        flat = re.sub(r"\s+", " ", paragraph).strip()
        if len(flat.split()) < _MIN_WORDS:
            continue
        if sum(char.isalpha() or char == " " for char in flat) / len(flat) < _MIN_PROSE_SHARE:
            continue
        kept.append(flat)
    return kept


def _source_files() -> list[Path]:
    roots = [_stdlib_dir(), *(Path(path) for path in sys.path if path.endswith("site-packages"))]
    files = []
    for root in roots:
        for path in root.rglob("*.py"):
            relative = set(path.relative_to(root).parts)
            if relative & {"test", "tests", "testing", "idlelib", "lib2to3", "site-packages", "dist-packages"}:
                continue
            files.append(path)
    return sorted(set(files))


def docstring_paragraphs() -> list[str]:
    """Prose paragraphs of the installed Python sources' docstrings (tests left out), sorted."""
    paragraphs = set()
    for path in _source_files():
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for docstring in _docstrings(source):
            paragraphs.update(_prose_paragraphs(docstring))
    return sorted(paragraphs)


def lm_corpus() -> tuple[list[str], list[str]]:
    """(train, heldout) texts. Training paragraphs that contain a held-out sentence are dropped."""
    train, heldout = split_corpus()
    heldout_set = set(heldout)
    extra = [
        paragraph for paragraph in docstring_paragraphs()
        if paragraph not in heldout_set and not heldout_set.intersection(_SENTENCE_BREAK.split(paragraph))
    ]
    return train + extra, heldout
