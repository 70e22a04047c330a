"""spark-submit entry point for `sparkcnn augment`: augment Parquet splits (rotate, shift, skew,
elastic, ...) reproducibly: <split>_aug + figure.

    spark-submit --py-files dist/sparkcnn-libs.zip jobs/augment.py --conf conf/augment_mnist.yaml
"""
import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["augment", *sys.argv[1:]]))
