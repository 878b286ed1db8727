"""What a goal's candidates would each compute again from the same untouched original: its fp32 ONNX
export and the calibration statistics of its layers. The search hands a cache to every candidate's first
step (the only one that sees the original as uploaded); a step asks it before computing, by a key that
names everything the result depends on."""

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ReuseCache:
    def __init__(self, directory: Path):
        self.directory = directory
        self._values: dict[Any, Any] = {}
        self._lock = threading.Lock()
        self.hits: dict[str, int] = {}

    def _hit(self, kind: str) -> None:
        self.hits[kind] = self.hits.get(kind, 0) + 1

    def file(self, name: str, make: Callable[[Path], Path]) -> Path:
        """The cached file `name`, made once by `make(path)`; callers read it and never change it."""
        with self._lock:
            path = self.directory / name
            if path in self._values:
                self._hit(name)
                return path
            self.directory.mkdir(parents=True, exist_ok=True)
            make(path)
            self._values[path] = True
            return path

    def value(self, kind: str, key: Any, make: Callable[[], T]) -> T:
        """The value of `make()` for (`kind`, `key`), computed once."""
        with self._lock:
            if (kind, key) in self._values:
                self._hit(kind)
                return self._values[(kind, key)]
            value = make()
            self._values[(kind, key)] = value
            return value
