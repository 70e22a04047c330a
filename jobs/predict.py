"""spark-submit entry point for `sparkcnn predict`: raw image files scored into a predictions table.

    spark-submit --py-files dist/sparkcnn-libs.zip jobs/predict.py --conf conf/predict.yaml \
        --set predict.input='s3://bucket/photos/**/*.jpg' --set predict.output=s3://bucket/predictions
"""
import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
