"""Executor side of materialising a DataFrame for training: Arrow batches of images -> record batches.

Every row is decoded and fitted by the scoring engine's own decoder
(pipelines.inference.cnn_model_remote.decode_rows), so a CNNModel scoring the same column later
feeds the network exactly the pixels training saw.  Rows that cannot become a record (no image,
not decodable, another size when none was asked for, no label) are left out of the output and
reported, with the reason, through an accumulator keyed by partition: a retried task replaces
its partition's report instead of adding to it, so the driver's counts stay exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
from pyspark.accumulators import AccumulatorParam

from pipelines.core import records
from pipelines.inference.cnn_model_remote import Columns, decode_rows
from pipelines.inference.network import NetworkSpec

ID_COLUMN = "_sparkcnn_id"          # int64 id of the row (hash of its file's path, when it has one)
ORIGIN_COLUMN = "_sparkcnn_origin"  # where the row came from, for reject reasons ('' when unknown)
LABEL_COLUMN = "_sparkcnn_label"    # the label as given: integer or string
SIZE_REJECT = "size"                # the kind of reject that means "set imageSize"
MAX_REPORTED = 10_000               # rejects reported with their origin, per partition (all are counted)


class PartitionReports(AccumulatorParam):
    """{partition: (rows seen, rejected, [(origin, kind, reason), ...])}; a later attempt replaces an earlier."""

    def zero(self, value):
        return {}

    def addInPlace(self, a, b):
        a.update(b)
        return a


@dataclass(frozen=True)
class Plan:
    """What every task needs: the target shape, the column forms and the label mapping."""
    target: NetworkSpec               # height, width, channels, resize of the records to write
    cols: Columns                     # the image column and its form
    strict_size: bool                 # no imageSize: an image of another size is a reject
    label_index: Optional[dict]       # string label -> class index; None: labels are class indices
    validation_col: str = ""          # carried as int32 0/1 beside the record columns ('' = none)
    max_pixels: int = 89_478_485

    @property
    def schema(self) -> pa.Schema:
        extra = [pa.field(self.validation_col, pa.int32())] if self.validation_col else []
        return pa.schema(list(records.ARROW_SCHEMA) + extra)

    @property
    def spark_ddl(self) -> str:
        return records.SPARK_DDL + (f", `{self.validation_col}` INT" if self.validation_col else "")


def _labels(values: list, plan: Plan) -> tuple:
    """(class index or None, reason) per row."""
    out = []
    for value in values:
        if value is None:
            out.append((None, "label is null"))
        elif plan.label_index is not None:
            index = plan.label_index.get(str(value))
            out.append((index, None) if index is not None else (None, f"label {value!r} is not a known class"))
        elif int(value) < 0:
            out.append((None, f"label {value} is negative; class indices start at 0"))
        else:
            out.append((int(value), None))
    return out


def to_records(plan: Plan, reports, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: the decodable, labelled rows as records; the others reported by reason."""
    from pyspark import TaskContext
    seen, rejected, listed = 0, 0, []
    spec = plan.target
    for batch in batches:
        n = batch.num_rows
        seen += n
        images, ok, sizes, errors = decode_rows(batch, plan.cols, spec, plan.max_pixels)
        labels = _labels(batch.column(batch.schema.get_field_index(LABEL_COLUMN)).to_pylist(), plan)
        origins = batch.column(batch.schema.get_field_index(ORIGIN_COLUMN)).to_pylist()
        keep, positions = [], []
        for j, i in enumerate(ok):
            if plan.strict_size and tuple(sizes[i]) != spec.size:
                errors[i] = (SIZE_REJECT, f"{sizes[i][0]}x{sizes[i][1]}, not {spec.height}x{spec.width} like the "
                                          "first image (set imageSize to fit every image to one size)")
            elif labels[i][0] is None:
                errors[i] = ("label", labels[i][1])
            else:
                keep.append(j)
                positions.append(i)
        for i, error in enumerate(errors):
            if error is not None:
                rejected += 1
                if len(listed) < MAX_REPORTED:
                    kind, reason = error if isinstance(error, tuple) else ("image", error)
                    listed.append((origins[i] or f"row {i} of a batch", kind, reason))
        if not positions:
            continue
        ids = batch.column(batch.schema.get_field_index(ID_COLUMN)).to_numpy(zero_copy_only=False)[positions]
        out = records.encode_batch(ids, np.array([labels[i][0] for i in positions]), images[keep])
        if plan.validation_col:
            flags = batch.column(batch.schema.get_field_index(plan.validation_col)).to_pylist()
            values = [None if flags[i] is None else int(flags[i]) for i in positions]
            out = pa.RecordBatch.from_arrays(list(out.columns) + [pa.array(values, pa.int32())], schema=plan.schema)
        yield out
    reports.add({TaskContext.get().partitionId(): (seen, rejected, listed)})
