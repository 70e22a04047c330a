"""build_spark on a session that is already running: what it can still apply, it applies; the rest it names."""
from conftest import logged_lines

from pipelines.core.sections import SparkSection
from pipelines.core.session import build_spark


def test_running_session_takes_runtime_settings_and_names_the_rest(spark):
    before = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        with logged_lines() as logs:
            again = build_spark(SparkSection(master=spark.sparkContext.master, conf={
                "spark.sql.shuffle.partitions": "3", "spark.executor.memory": "5g"}))
        assert again is spark
        assert spark.conf.get("spark.sql.shuffle.partitions") == "3"          # runtime SQL setting: applied
        assert len(logs) == 1 and "not applied" in logs[0]
        assert "spark.executor.memory=5g" in logs[0] and "shuffle.partitions" not in logs[0]
        with logged_lines() as logs:
            build_spark(SparkSection(master="local[7]", conf={"spark.sql.shuffle.partitions": "3"}))
        assert "master=local[7]" in logs[0]
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)
