"""Results frames as Markdown tables (the experiment and localise stages' results.md)."""
from __future__ import annotations

import math

import numpy as np


def to_markdown(frame) -> str:
    def fmt(col, v):
        if isinstance(v, float):
            if math.isnan(v):
                return "-"
            if "seconds" in col:
                return f"{v:.2f}"
            return f"{v:.1e}" if 0 < abs(v) < 1e-3 else f"{v:.4f}"
        if isinstance(v, (int, np.integer)) and col == "params":
            return f"{int(v):,}"
        return str(v)
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(fmt(c, row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"
