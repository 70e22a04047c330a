"""Settings of `sparkcnn export`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from pipelines.core.config import setting


@dataclass(frozen=True)
class ExportSection:
    splits: Optional[list] = setting(None, doc="splits to export (default: [test])")
    out_dir: Optional[str] = setting(None, doc="default: <run dir>/export; files go to <out_dir>/<split>/<class>/<id>.png")

    def resolve(self, where: str, sections: dict, path) -> "ExportSection":
        return self if self.splits else dataclasses.replace(self, splits=["test"])
