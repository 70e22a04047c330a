"""`sparkcnn predict` on a Parquet list of image paths (pipelines/images/path_lists.py reads it, by the
same rules as a .txt list): every listed file one row or one reject, a missing file a reject with its reason, a
relative path scored under its absolute path.  The model, the photos and the section come from
tests/test_predict.py."""
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.images.path_lists import PathListError
from pipelines.predict.stage import predict_files

from test_predict import make_folder, model_file, predictions, rejects, section  # noqa: F401 (model_file: a fixture)


def test_a_parquet_list_with_a_missing_file_and_a_relative_path(spark, model_file, tmp_path, monkeypatch):  # noqa: F811
    root = tmp_path / "photos"
    good = make_folder(str(root), count=6)
    gone = str(root / "gone.jpg")
    # A relative path is relative to the list's folder (pipelines/images/path_lists.py), wherever the job runs.
    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(good[0], root)
    listed = root / "to_score.parquet"
    pq.write_table(pa.table({"file": [relative, good[1], good[2], gone, None],
                             "note": ["relative", "absolute", "absolute", "missing", "no path"]}), listed)
    out = str(tmp_path / "out")

    with pytest.raises(PathListError, match="predict.input .*to_score.parquet: no column 'path' in the list; "
                                             "columns: file, note"):
        predict_files(spark, section(input=str(listed), model=model_file, output=out))

    summary = predict_files(spark, section(input=str(listed), model=model_file, output=out, path_column="file"))
    assert (summary["listed"], summary["scored"], summary["rejected"]) == (4, 3, 1)   # the null row names nothing
    assert sorted(predictions(out).path) == sorted(good[:3])       # the relative one under its absolute path
    reasons = rejects(out).set_index("path").reason
    assert list(reasons.index) == [gone] and "vanished" in reasons[gone]

    again = predict_files(spark, section(input=str(listed), model=model_file, output=out, path_column="file"))
    assert (again["scored"], again["rejected"], again["unchanged"]) == (0, 0, 4)
