"""Where every benchmark leaves its numbers: one JSON file, and one line saying where and how to rerun."""
import json
import os


def write_report(path: str, report: dict, reproduce: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\n-> {path}   reproduce: {reproduce}")
    return path
