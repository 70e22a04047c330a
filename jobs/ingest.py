"""spark-submit entry point for `sparkcnn ingest`: ingest stage.

    spark-submit --py-files dist/sparkcnn-libs.zip jobs/ingest.py --conf conf/mnist.yaml
"""
import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
