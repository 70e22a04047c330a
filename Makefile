# One venv, the pinned stack, then the job or the tests.  See README.md.
VENV ?= .venv
PY := $(VENV)/bin/python
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(PY))

.PHONY: install demo cluster-demo test test-fast bench bench-spine bench-ingest bench-featurizer bench-augment bench-predict bench-levers bench-scaling pyfiles clean

# GPU=1: tensorflow[and-cuda] and Horovod built against it (README: running on a GPU cluster).
GPU ?= 0
install:
	@GPU=$(GPU) bash scripts/bootstrap.sh

demo: install
	$(VENV)/bin/sparkcnn run --conf conf/mnist.yaml

# The demo on a real Spark standalone cluster on loopback (a master and two 1-core workers from the
# installed pyspark), submitted with spark-submit and the library shipped by --py-files.
cluster-demo: install pyfiles
	$(PY) scripts/local_cluster.py run -- $(abspath $(VENV))/lib/python3.11/site-packages/pyspark/bin/spark-submit \
	  --master {MASTER} --driver-memory 2g --py-files dist/sparkcnn-libs.zip \
	  --conf spark.pyspark.python=$(abspath $(PY)) --conf spark.executor.memory=2g \
	  jobs/run.py --conf conf/mnist.yaml --set run.name=mnist_cluster --set train.nics=[lo] $(CLUSTER_DEMO_ARGS)

test: install
	$(PY) -m pytest -q -ra tests

# The everyday tier: no Horovod, no cluster, no end-to-end run (tests marked slow are left out).
test-fast: install
	$(PY) -m pytest -q -ra -m "not slow" tests

# Each benchmark prints side-by-side ratios against the plain-library baseline measured in the same run.
bench: bench-spine bench-levers bench-scaling bench-ingest bench-featurizer bench-augment bench-predict

bench-spine: install
	$(PY) -m benchmarks.spine $(BENCH_ARGS)

bench-levers: install
	$(PY) -m benchmarks.levers $(BENCH_ARGS)

bench-scaling: install
	$(PY) -m benchmarks.scaling $(BENCH_ARGS)

bench-ingest: install
	$(PY) -m benchmarks.ingest

# DeepImageFeaturizer through Spark vs Keras predict (needs data/datasets/mnist/test: sparkcnn ingest or transfer)
bench-featurizer: install
	$(PY) -m benchmarks.featurizer $(FEATURIZER_BENCH_ARGS)

# Augmentation vs the Augmentor package (installed for the benchmark only, into ~/.cache/sparkcnn).
bench-augment: install
	$(PY) -m benchmarks.augment $(BENCH_AUGMENT_ARGS)

# Batch scoring of raw JPEG files: sparkcnn vs a plain loop, predict_batch_udf and Ray Data (installed for the
# benchmark only, into ~/.cache/sparkcnn/bench-ray), against the decode + model limit measured in the same run.
bench-predict: install
	$(PY) -m benchmarks.predict $(BENCH_PREDICT_ARGS)

# The library as one zip for spark-submit --py-files (executors import pipelines/ and featurizers/ from it).
pyfiles: dist/sparkcnn-libs.zip
dist/sparkcnn-libs.zip: $(shell find pipelines featurizers -name '*.py')
	@$(PY) scripts/make_pyfiles.py $@

clean:
	rm -rf runs dist .pytest_cache
