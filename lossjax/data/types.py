"""The types several data modules share: a :class:`Source` of raw files and the :class:`Missing`
error. It imports nothing else from lossjax.data, so every module can import it at the top."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lossjax.errors import DataError


@dataclass(frozen=True)
class Source:
    """A set of raw files found somewhere: which kind of place, which published form."""

    kind: str  # "local" | "tfds-download" | "tfds-prepared" | "system" | "download"
    form: str  # a key of lossjax.data.registry.FORMS
    root: Path
    files: dict[str, Path]

    def describe(self) -> dict:
        return {"kind": self.kind, "form": self.form, "path": str(self.root),
                "files": [str(p) for p in self.files.values()]}


class Missing(DataError):
    """No source has the dataset: ``lossjax data info`` reports it as missing, not broken."""
