#!/usr/bin/env bash
# Spark's GPU discovery script: prints the GPUs of this node as Spark's resource JSON,
#   {"name": "gpu", "addresses": ["0", "1"]}
# from nvidia-smi's indexes (the numbering CUDA_VISIBLE_DEVICES uses). Point Spark at it with
#   spark.worker.resource.gpu.discoveryScript   (standalone workers)
#   spark.executor.resource.gpu.discoveryScript (YARN, Kubernetes; ship it with --files)
set -euo pipefail
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_discovery.sh: nvidia-smi not found on $(hostname): no NVIDIA driver on this node" >&2
  exit 1
fi
indexes="$(nvidia-smi --query-gpu=index --format=csv,noheader)"
addresses="$(printf '%s\n' "$indexes" | sed -e 's/[[:space:]]//g' -e '/^$/d' -e 's/.*/"&"/' | paste -sd, -)"
printf '{"name": "gpu", "addresses": [%s]}\n' "$addresses"
