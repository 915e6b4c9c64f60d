"""Excel workbooks: a column with no value at all (a caller who never sent X-Request-ID) still writes."""

from __future__ import annotations

import openpyxl
import pandas as pd

from duanka.serving.workbook import write_workbook


def test_a_column_without_any_value_is_written_empty(tmp_path):
    frame = pd.DataFrame({"application_id": ["A000000001", "A000000002"], "client_request_id": [None, None]})
    out = write_workbook({"decisions": frame}, tmp_path / "audit.xlsx")
    sheet = openpyxl.load_workbook(out)["decisions"]
    assert [c.value for c in sheet[1]] == ["application_id", "client_request_id"]
    assert [[c.value for c in row] for row in sheet.iter_rows(min_row=2)] == [
        ["A000000001", None],
        ["A000000002", None],
    ]
