"""spark-submit entry point for `sparkcnn localise`: convert mnist_cnn to a fully-convolutional net,
prove equivalence, localise digits in composite images with Spark (heatmaps + score).

    spark-submit --py-files dist/sparkcnn-libs.zip jobs/localise.py --conf conf/experiments/localise.yaml
"""
import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["localise", *sys.argv[1:]]))
