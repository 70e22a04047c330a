"""spark-submit entry point for `sparkcnn run`: run stage.

    spark-submit --py-files dist/sparkcnn-libs.zip jobs/run.py --conf conf/mnist.yaml
"""
import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
