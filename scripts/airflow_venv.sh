#!/usr/bin/env bash
# A test-only Airflow for examples/airflow/sparkcnn_nightly.py: apache-airflow and its Spark provider
# in a venv of their own, never the project's .venv (Airflow pins SQLAlchemy, protobuf, numpy, pandas
# ... to versions the project's TensorFlow stack cannot share).  Cached per version, like the
# benchmark installs:
#
#   ~/.cache/sparkcnn/airflow-venv-<airflow>-spark-<provider>-py<X.Y>     (SPARKCNN_AIRFLOW_VENV overrides)
#
# Idempotent: a venv whose marker holds the digest of the pinned versions is reused as it is;
# anything else there (a half-built venv, older pins) is removed and built again.  The exact versions
# come from examples/airflow/constraints-airflow-<airflow>-python-<X.Y>.txt (a pip freeze of the
# first resolution).  Prints the venv's path as its last line.
#
#   bash scripts/airflow_venv.sh          # then: <venv>/bin/airflow version
#
# Exit codes: 0 ready; 10 pip could not install from the package index (tests/test_airflow.py skips
# on that, with pip's message); anything else is a problem of this machine or script.
set -euo pipefail

AIRFLOW_VERSION=3.3.2
SPARK_PROVIDER_VERSION=6.3.4

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3.11}
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
constraints="$here/examples/airflow/constraints-airflow-$AIRFLOW_VERSION-python-$pyver.txt"
if [[ ! -f "$constraints" ]]; then
  echo "airflow_venv: no pinned versions for Python $pyver ($constraints); the project uses Python 3.11" >&2
  exit 1
fi
venv=${SPARKCNN_AIRFLOW_VENV:-$HOME/.cache/sparkcnn/airflow-venv-$AIRFLOW_VERSION-spark-$SPARK_PROVIDER_VERSION-py$pyver}
marker="$venv/.sparkcnn-complete"
want=$(cat "$constraints" | sha256sum | cut -c1-16)

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"           # two test runs at once: the second waits for the first's venv
flock 9

if [[ -f "$marker" && "$(cat "$marker")" == "$want" && -x "$venv/bin/airflow" ]]; then
  echo "$venv"
  exit 0
fi

echo "airflow_venv: building $venv (apache-airflow==$AIRFLOW_VERSION, apache-airflow-providers-apache-spark==$SPARK_PROVIDER_VERSION)" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
log=$(mktemp)
if ! "$venv/bin/pip" install --quiet --disable-pip-version-check -c "$constraints" \
      "apache-airflow==$AIRFLOW_VERSION" "apache-airflow-providers-apache-spark==$SPARK_PROVIDER_VERSION" \
      >"$log" 2>&1; then
  grep -v "^WARNING: Location" "$log" | tail -15 >&2
  rm -rf "$venv" "$log"
  exit 10
fi
rm -f "$log"
home=$(mktemp -d)               # `airflow version` writes an airflow.cfg into AIRFLOW_HOME
AIRFLOW_HOME=$home "$venv/bin/airflow" version >/dev/null 2>&1 \
  || { rm -rf "$home"; echo "airflow_venv: $venv/bin/airflow does not start" >&2; exit 1; }
rm -rf "$home"
echo "$want" > "$marker"
echo "$venv"
