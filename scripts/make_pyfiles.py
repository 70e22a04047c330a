"""Zip the library packages for `spark-submit --py-files` (sources only, no caches)."""
import os
import sys
import zipfile

out = sys.argv[1]
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
with zipfile.ZipFile(out + ".tmp", "w", zipfile.ZIP_DEFLATED) as zf:
    for package in ("pipelines", "featurizers"):
        for root, dirs, files in os.walk(package):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in sorted(files):
                if name.endswith((".py", ".yaml")):
                    zf.write(os.path.join(root, name))
os.replace(out + ".tmp", out)
print(out)
