"""sparkcnn every night on Airflow: ingest -> train -> score, predict -> report, each a spark-submit.

Copy this file into your DAGs folder and set the params below to your install (or give them per
run: `airflow dags trigger sparkcnn_nightly -c '{"images": "/data/incoming"}'`).  Each task runs

    spark-submit --py-files <libs_zip> <project_dir>/jobs/<stage>.py --conf <conf> --set ...

through the `spark_default` connection, whose host is the master (local[*], yarn, spark://host:7077,
k8s://...).  Keep the default client deploy mode: spark-submit then exits with sparkcnn's own code
(in cluster mode it reports the submission, not the driver), and this DAG keys retries to it:

    0  success, stages skipped as up to date included
    2  usage or config error                  -> failed at once, no retries (fix the conf or params)
    3  bad input data                          -> failed at once, no retries (fix the data)
    4  infrastructure failure worth retrying   -> retried (lost executor, dead Horovod worker, store down)
    5  another run holds the run's lock        -> retried later
    1 and anything else (a bug, a kill)        -> Airflow's usual retries

A retry is the same command again: ingest and score skip what is up to date, training resumes
after its last finished epoch, predict scores only the files not yet in the table.

One DAG run, for the day `ds`:
    ingest   the conf's dataset (skipped when the raw data did not change)
    train    run `run_name`, or `run_name-YYYYMMDD` with daily_runs (a model per day)
    score    that model on the dataset's test split (the report's metrics)
    predict  every image file under `images` (`images/YYYY-MM-DD` with images_per_day) into the
             predictions table `predictions/ds=YYYY-MM-DD` (spark.read.parquet(predictions) has a ds column)
    report   <runs_dir>/<run>/report/index.html

Tested with Airflow 3.3.2 and apache-airflow-providers-apache-spark 6.3.4 (tests/test_airflow.py);
on Airflow 2.x the fallback imports below are used (not tested here).
"""
from __future__ import annotations

import re
import shlex
from datetime import datetime

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

try:                                    # Airflow 3
    from airflow.sdk import DAG, Param
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:                     # Airflow 2.x
    from airflow import DAG
    from airflow.exceptions import AirflowException, AirflowFailException
    from airflow.models.param import Param

# sparkcnn's exit codes (`sparkcnn --help`) that no retry can fix.
NEVER_RETRY = {2: "usage or config error: fix the conf or the params",
               3: "bad input data: fix the data"}

# SparkSubmitHook.submit raises AirflowException("Cannot execute: <command>. Error code is: N." +
# "\nLast spark-submit output:\n<its last lines>"); the command may hold anything, so the code is the
# last match before the output, and sparkcnn's one error line is the last such line of the output.
_OUTPUT = "\nLast spark-submit output:"
_ERROR_CODE = re.compile(r"Error code is: (-?\d+)")
_SPARKCNN_ERROR = re.compile(r"^sparkcnn \w+: error: .*$", re.MULTILINE)


def exit_code_of(error: BaseException) -> int | None:
    """spark-submit's exit code in a SparkSubmitHook failure, or None if the error carries none."""
    codes = _ERROR_CODE.findall(str(error).split(_OUTPUT, 1)[0])
    return int(codes[-1]) if codes else None


def sparkcnn_error_of(error: BaseException) -> str:
    """sparkcnn's own one-line error in a SparkSubmitHook failure ('' if its output has none)."""
    lines = _SPARKCNN_ERROR.findall(str(error).partition(_OUTPUT)[2])
    return lines[-1] if lines else ""


class SparkcnnSubmitOperator(SparkSubmitOperator):
    """`spark-submit <project_dir>/jobs/<stage>.py --conf <conf> --set key=value ...`, failing at once
    (no retries) when sparkcnn says the command or the data is wrong.

    `sets` are this stage's settings; `overrides` (space-separated key=value, templated) are added
    to every stage, so a DAG run can change any setting: -c '{"overrides": "train.epochs=3"}'.
    """

    template_fields = (*SparkSubmitOperator.template_fields, "sets", "overrides", "stage_conf")

    def __init__(self, *, stage: str, sets: dict | None = None, overrides: str = "{{ params.overrides }}",
                 stage_conf: str = "{{ params.conf }}", **kwargs):
        super().__init__(application="{{ params.project_dir }}/jobs/" + stage + ".py",
                         py_files="{{ params.libs_zip }}", name=f"sparkcnn-{stage}", **kwargs)
        self.sets = sets or {}
        self.overrides = overrides
        self.stage_conf = stage_conf

    def execute(self, context):
        self.application_args = ["--conf", self.stage_conf]
        for item in [f"{key}={value}" for key, value in self.sets.items()] + shlex.split(self.overrides or ""):
            self.application_args += ["--set", item]
        try:
            return super().execute(context)
        except AirflowException as error:
            code = exit_code_of(error)
            if code in NEVER_RETRY:
                raise AirflowFailException(f"sparkcnn exit {code}, not retried ({NEVER_RETRY[code]}): "
                                           f"{sparkcnn_error_of(error) or error}") from error
            raise


RUN = "{{ params.run_name }}{{ '-' ~ ds_nodash if params.daily_runs else '' }}"
COMMON_SETS = {"data.datasets_dir": "{{ params.datasets_dir }}",
               "run.runs_dir": "{{ params.runs_dir }}",
               "run.name": RUN}

with DAG(
    dag_id="sparkcnn_nightly",
    description="sparkcnn ingest -> train -> score -> predict -> report",
    schedule="@daily",
    start_date=datetime(2026, 12, 1),
    catchup=False,
    max_active_runs=1,                  # one night at a time (a second would wait for the run lock: exit 5)
    default_args={
        "retries": 3,                   # used for exit 4 and 5 (and unexpected failures); 2 and 3 fail at once
        # retry_delay: Airflow's [core] default_task_retry_delay (300 s unless set), or set it here:
        # "retry_delay": timedelta(minutes=30),
        "conn_id": "spark_default",
        "driver_memory": "2g",
        "conf": {"spark.pyspark.python": "{{ params.python }}",
                 "spark.pyspark.driver.python": "{{ params.python }}"},
    },
    params={
        "project_dir": Param("/opt/sparkcnn", type="string", description="the sparkcnn checkout (its jobs/ folder)"),
        "python": Param("/opt/sparkcnn/.venv/bin/python", type="string",
                        description="the project venv's python, on the driver and every executor"),
        "libs_zip": Param("/opt/sparkcnn/dist/sparkcnn-libs.zip", type="string",
                          description="`make pyfiles` output shipped with --py-files ('' for none)"),
        "conf": Param("/opt/sparkcnn/conf/mnist.yaml", type="string", description="the sparkcnn conf file"),
        "datasets_dir": Param("/data/sparkcnn/datasets", type="string", description="data.datasets_dir"),
        "runs_dir": Param("/data/sparkcnn/runs", type="string", description="run.runs_dir"),
        "run_name": Param("nightly", type="string", description="run.name"),
        "daily_runs": Param(False, type="boolean",
                            description="a run (and model) per day, run_name-YYYYMMDD, instead of one run "
                                        "that is retrained only when its data or settings change"),
        "images": Param("/data/incoming", type="string", description="the image files predict scores"),
        "images_per_day": Param(True, type="boolean",
                                description="score images/YYYY-MM-DD (the day's folder) instead of images"),
        "predictions": Param("/data/sparkcnn/predictions", type="string",
                             description="predictions tables: one per day, predictions/ds=YYYY-MM-DD"),
        "overrides": Param("", type="string",
                           description="extra --set key=value for every stage, space separated"),
    },
    tags=["sparkcnn"],
) as dag:
    ingest = SparkcnnSubmitOperator(task_id="ingest", stage="ingest", sets=COMMON_SETS)
    train = SparkcnnSubmitOperator(task_id="train", stage="train", sets=COMMON_SETS)
    score = SparkcnnSubmitOperator(task_id="score", stage="score", sets=COMMON_SETS)
    predict = SparkcnnSubmitOperator(task_id="predict", stage="predict", sets={
        **COMMON_SETS,
        "predict.model": "{{ params.runs_dir }}/" + RUN,       # the run dir: model, class names, resize rule
        "predict.input": "{{ params.images }}{{ '/' ~ ds if params.images_per_day else '' }}",
        "predict.output": "{{ params.predictions }}/ds={{ ds }}",
    })
    report = SparkcnnSubmitOperator(task_id="report", stage="report", sets=COMMON_SETS)

    ingest >> train >> [score, predict] >> report
