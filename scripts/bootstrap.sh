#!/usr/bin/env bash
# Create (or reuse) the project venv and install the pinned stack, then Horovod.
#
# Horovod must be compiled after TensorFlow, against that exact TF, without build
# isolation. Compiling takes minutes, so the built wheel is kept in a wheelhouse
# keyed by the TF version (and Python version): a second install, or CI on the same
# machine, reuses it. A wheel built against another TF would load and then fail
# at import with undefined symbols, which is why the key includes the TF version.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$here/.venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
stamp="$venv/.sparkcnn-installed"
req="$here/requirements.txt"

if [ -f "$stamp" ] && cmp -s "$stamp" <(cat "$req" "$0" "$here/setup.py"); then
  exit 0
fi

# Fashion-MNIST for offline machines comes from Debian's package (the tests read it); best effort.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "[bootstrap] installing Debian's dataset-fashion-mnist"
  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
   || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) \
   || echo "[bootstrap] could not install dataset-fashion-mnist; its test will be skipped"
fi

# Headless Chromium renders the run report in the tests; best effort.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "[bootstrap] installing Debian's chromium (report rendering test)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
   || echo "[bootstrap] could not install chromium; the report rendering test will be skipped"
fi

# Azure's Blob emulator for the object-store tests (tests/conftest.py looks here); best effort, cached.
azurite_dir="${XDG_CACHE_HOME:-$HOME/.cache}/sparkcnn/azurite-3.37.0"
if [ ! -x "$azurite_dir/node_modules/.bin/azurite-blob" ] && command -v npm >/dev/null 2>&1; then
  echo "[bootstrap] installing Azurite 3.37.0 (Azure Blob emulator, tests) into $azurite_dir"
  mkdir -p "$azurite_dir"
  npm install --prefix "$azurite_dir" --no-audit --no-fund --silent azurite@3.37.0 >/dev/null 2>&1 \
   || echo "[bootstrap] could not install Azurite; the Azure object-store tests will be skipped"
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install -q --upgrade "pip<25" >/dev/null
echo "[bootstrap] installing the pinned stack into $venv"
$pip install -q -r "$req"

tf_version="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("tensorflow-cpu"))')"
py_tag="$("$venv/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
wheelhouse="${SPARKCNN_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/sparkcnn/wheelhouse}/horovod-0.28.1-tf-$tf_version-$py_tag"
mkdir -p "$wheelhouse"
if ! ls "$wheelhouse"/horovod-0.28.1-*.whl >/dev/null 2>&1; then
  echo "[bootstrap] building horovod 0.28.1 against TF $tf_version (a few minutes, cached in $wheelhouse)"
  tmp="$(mktemp -d "$wheelhouse/.build.XXXX")"
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
  HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 MAKEFLAGS="-j$(nproc)" \
    $pip wheel -q --no-build-isolation --no-deps --no-binary horovod -w "$tmp" "horovod==0.28.1"
  mv "$tmp"/horovod-*.whl "$wheelhouse"/   # publish only a complete wheel
  rmdir "$tmp"
fi
$pip install -q --no-index --find-links "$wheelhouse" "horovod==0.28.1"
# the [spark] extra's other needs are already in requirements.txt; check nothing is missing
$pip install -q "horovod[spark]==0.28.1" --find-links "$wheelhouse" --no-index 2>/dev/null \
  || $pip install -q --find-links "$wheelhouse" "horovod[spark]==0.28.1"
$pip install -q --no-deps -e "$here"
"$venv/bin/python" -c 'import horovod.tensorflow.keras as h; import horovod.spark; print("[bootstrap] horovod", h.__name__, "ok")'
cat "$req" "$0" "$here/setup.py" > "$stamp"
