"""spark-submit entry point for `sparkcnn experiment`: sweep a grid of trials (architecture, batch
size, optimizer, ...) as parallel Spark tasks: results table + plots.

    spark-submit --py-files dist/sparkcnn-libs.zip jobs/experiment.py --conf conf/experiments/architectures.yaml
"""
import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", *sys.argv[1:]]))
