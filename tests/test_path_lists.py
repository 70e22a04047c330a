"""One parser for every list of image paths (pipelines/images/path_lists.py): ingest's `data.path` and
predict's `predict.input` read the same list the same way, text or Parquet, wherever the job runs."""
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.images.listing import list_inputs
from pipelines.images.path_lists import PathListError, is_path_list, read_path_list
from pipelines.ingest.file_list import listed_files


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos" / "cats"
    folder.mkdir(parents=True)
    names = ["a#1.jpg", "b c.jpg", "d.jpg"]
    for name in names:
        (folder / name).write_bytes(b"not decoded here")
    return tmp_path, [str(folder / n) for n in names]


def test_comments_hashes_spaces_and_relative_paths(photos, tmp_path, monkeypatch):
    root, files = photos
    listed = root / "lists" / "tonight.txt"
    listed.parent.mkdir()
    listed.write_text("\ufeff# tonight's photos\n\n  ../photos/cats/a#1.jpg  \n   # an indented comment\n"
                      f"{files[1]}\nfile://{files[2]}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path / "photos")        # another working directory: relative means the list's folder
    assert read_path_list(str(listed)) == files
    assert is_path_list(str(listed)) and not is_path_list(str(root / "lists" / "absent.txt"))


def test_parquet_lists_take_the_path_column(photos):
    root, files = photos
    table = root / "paths.parquet"
    pq.write_table(pa.table({"file": ["photos/cats/a#1.jpg", None, "", files[1]], "n": [1, 2, 3, 4]}), table)
    assert read_path_list(str(table), column="file") == files[:2]
    with pytest.raises(PathListError, match=r"predict.input .*paths.parquet: no column 'path' in the list; "
                                            r"columns: file, n"):
        read_path_list(str(table), setting="predict.input")


@pytest.mark.parametrize("content, message", [
    (b"# nothing but a comment\n\n", "the list names no file"),
    (b"\xff\xfephotos\n", "not UTF-8 text"),
])
def test_a_list_that_names_nothing_is_one_clear_error(tmp_path, content, message):
    bad = tmp_path / "bad.lst"
    bad.write_bytes(content)
    with pytest.raises(PathListError, match=f"data.path {bad}: {message}"):
        read_path_list(str(bad))


def test_ingest_and_predict_read_a_list_alike(photos, tmp_path, monkeypatch):
    """The same list gives the same files to folder ingest and to predict, text or Parquet."""
    root, files = photos
    text = root / "photos.txt"
    text.write_text("photos/cats/a#1.jpg\nphotos/cats/b c.jpg\n# later: d\nphotos/cats/missing.jpg\n")
    table = root / "photos.parquet"
    pq.write_table(pa.table({"path": ["photos/cats/a#1.jpg", "photos/cats/b c.jpg", "photos/cats/missing.jpg"]}),
                   table)
    monkeypatch.chdir(tmp_path / "photos" / "cats")
    missing = os.path.join(os.path.dirname(files[0]), "missing.jpg")
    for listed in (text, table):
        predicted = list_inputs(str(listed)).column("path").to_pylist()
        assert predicted == sorted(files[:2] + [missing])
        ingest_root, found = listed_files(str(listed))
        assert sorted(os.path.join(ingest_root, rel) for rel in found) == predicted
        assert found["missing.jpg"][0] == 0 and found["a#1.jpg"][0] == len(b"not decoded here")
