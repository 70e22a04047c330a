"""spark-submit entry point for `sparkcnn report`: report stage.

    spark-submit --py-files dist/sparkcnn-libs.zip jobs/report.py --conf conf/mnist.yaml
"""
import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
