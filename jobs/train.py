"""spark-submit entry point for `sparkcnn train`: train stage.

    spark-submit --py-files dist/sparkcnn-libs.zip jobs/train.py --conf conf/mnist.yaml
"""
import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
