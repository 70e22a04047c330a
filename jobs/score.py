"""spark-submit entry point for `sparkcnn score`: score stage.

    spark-submit --py-files dist/sparkcnn-libs.zip jobs/score.py --conf conf/mnist.yaml
"""
import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
