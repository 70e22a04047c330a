"""spark-submit entry point for `sparkcnn visualize`: PNG grid of N samples per class (misclassified
in red with predictions) + class counts.

    spark-submit --py-files dist/sparkcnn-libs.zip jobs/visualize.py --conf conf/mnist.yaml --set visualize.split=test --set visualize.predictions=true
"""
import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["visualize", *sys.argv[1:]]))
