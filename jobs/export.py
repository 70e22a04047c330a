"""spark-submit entry point for `sparkcnn export`: write a dataset back to lossless PNG files, one
folder per class.

    spark-submit --py-files dist/sparkcnn-libs.zip jobs/export.py --conf conf/mnist.yaml --set export.splits=[test] --set export.out_dir=/tmp/mnist_png
"""
import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
