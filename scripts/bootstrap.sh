#!/usr/bin/env bash
# Create (or reuse) the project venv and install the pinned stack, then Horovod.
#
# Horovod must be compiled after TensorFlow, against that exact TF, without build
# isolation. Compiling takes minutes, so the built wheel is kept in a wheelhouse
# keyed by the TF version (and Python version): a second install, or CI on the same
# machine, reuses it. A wheel built against another TF would load and then fail
# at import with undefined symbols, which is why the key includes the TF version.
#
# GPU=1 (make install GPU=1): tensorflow[and-cuda] (same version; CUDA 12.2, cuDNN 8.9 and NCCL
# come as pip wheels) instead of tensorflow-cpu, and Horovod built against it: with NCCL
# allreduce when a CUDA toolkit (nvcc) and NCCL are found, else with gloo only (said below).
# The wheelhouse key includes that flavour, so CPU and GPU builds never mix.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$here/.venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
stamp="$venv/.sparkcnn-installed"
req="$here/requirements.txt"
gpu="${GPU:-0}"
stamp_text() { cat "$req" "$0" "$here/setup.py"; echo "GPU=$gpu"; }

if [ -f "$stamp" ] && cmp -s "$stamp" <(stamp_text); then
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
has() { "$venv/bin/python" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$1" 2>/dev/null; }
if [ "$gpu" = 1 ]; then
  # tensorflow-cpu and tensorflow install the same package directory: never both
  if has tensorflow-cpu; then $pip uninstall -q -y tensorflow-cpu; fi
  req_used="$(mktemp)"
  sed 's/^tensorflow-cpu==\(.*\)$/tensorflow[and-cuda]==\1/' "$req" > "$req_used"
  tf_dist=tensorflow
else
  if has tensorflow && ! has tensorflow-cpu; then $pip uninstall -q -y tensorflow; fi
  req_used="$req"
  tf_dist=tensorflow-cpu
fi
echo "[bootstrap] installing the pinned stack into $venv ($tf_dist)"
$pip install -q -r "$req_used"

tf_version="$("$venv/bin/python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$tf_dist")"
py_tag="$("$venv/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
horovod_env=(HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
             HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 "MAKEFLAGS=-j$(nproc)")
flavour=cpu
if [ "$gpu" = 1 ]; then
  nvcc="$(command -v nvcc || true)"
  [ -z "$nvcc" ] && [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ] && nvcc="${CUDA_HOME:-/usr/local/cuda}/bin/nvcc"
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  nccl_home="${NCCL_HOME:-}"
  if [ -z "$nccl_home" ] && [ -f "$site/nvidia/nccl/include/nccl.h" ]; then
    # the nvidia-nccl-cu12 wheel TF brings: headers and libnccl.so.2, linked as Horovod's build expects
    nccl_home="$(mktemp -d)"; mkdir -p "$nccl_home/lib"
    ln -s "$site/nvidia/nccl/include" "$nccl_home/include"
    ln -s "$site/nvidia/nccl/lib/libnccl.so.2" "$nccl_home/lib/libnccl.so"
  fi
  if [ -n "$nvcc" ] && [ -n "$nccl_home" ] && [ -f "$nccl_home/include/nccl.h" ]; then
    flavour=cuda-nccl
    horovod_env+=(HOROVOD_GPU_OPERATIONS=NCCL "HOROVOD_NCCL_HOME=$nccl_home" HOROVOD_NCCL_LINK=SHARED
                  "HOROVOD_CUDA_HOME=$(dirname "$(dirname "$nvcc")")")
    echo "[bootstrap] GPU build: Horovod with NCCL allreduce (nvcc $nvcc, NCCL $nccl_home)"
  else
    flavour=cuda-gloo
    echo "[bootstrap] GPU build: no CUDA toolkit (nvcc) or NCCL headers found, so Horovod is built with gloo" \
         "only: allreduce goes through host memory (install the CUDA toolkit, or set NCCL_HOME, and rerun)"
  fi
fi
wheelhouse="${SPARKCNN_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/sparkcnn/wheelhouse}/horovod-0.28.1-tf-$tf_version-$flavour-$py_tag"
[ "$flavour" = cpu ] && wheelhouse="${wheelhouse%-cpu-$py_tag}-$py_tag"   # the CPU key as before: cached wheels stay valid
mkdir -p "$wheelhouse"
if ! ls "$wheelhouse"/horovod-0.28.1-*.whl >/dev/null 2>&1; then
  echo "[bootstrap] building horovod 0.28.1 against TF $tf_version ($flavour; a few minutes, cached in $wheelhouse)"
  tmp="$(mktemp -d "$wheelhouse/.build.XXXX")"
  env "${horovod_env[@]}" $pip wheel -q --no-build-isolation --no-deps --no-binary horovod -w "$tmp" "horovod==0.28.1"
  mv "$tmp"/horovod-*.whl "$wheelhouse"/   # publish only a complete wheel
  rmdir "$tmp"
fi
$pip install -q --no-index --find-links "$wheelhouse" "horovod==0.28.1"
# the [spark] extra's other needs are already in requirements.txt; check nothing is missing
$pip install -q "horovod[spark]==0.28.1" --find-links "$wheelhouse" --no-index 2>/dev/null \
  || $pip install -q --find-links "$wheelhouse" "horovod[spark]==0.28.1"
$pip install -q --no-deps -e "$here"
"$venv/bin/python" -c 'import horovod.tensorflow.keras as h; import horovod.spark; print("[bootstrap] horovod", h.__name__, "ok")'
stamp_text > "$stamp"
