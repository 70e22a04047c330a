# One venv, the pinned stack, then the job or the tests.  See README.md.
VENV ?= .venv
PY := $(VENV)/bin/python
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(PY))

.PHONY: install demo test bench bench-augment pyfiles clean

install:
	@bash scripts/bootstrap.sh

demo: install
	$(VENV)/bin/sparkcnn run --conf conf/mnist.yaml

test: install
	$(PY) -m pytest -q -ra tests

bench: install bench-augment
	$(PY) -m benchmarks.spine $(BENCH_ARGS)

# Augmentation vs the Augmentor package (installed for the benchmark only, into ~/.cache/sparkcnn).
bench-augment: install
	$(PY) -m benchmarks.augment $(BENCH_AUGMENT_ARGS)

# The library as one zip for spark-submit --py-files (executors import pipelines/ and featurizers/ from it).
pyfiles: dist/sparkcnn-libs.zip
dist/sparkcnn-libs.zip: $(shell find pipelines featurizers -name '*.py')
	@$(PY) scripts/make_pyfiles.py $@

clean:
	rm -rf runs dist .pytest_cache
