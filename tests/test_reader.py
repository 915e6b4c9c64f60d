"""Reading contract files: strings exactly as written, or a clear refusal."""

from __future__ import annotations

import csv
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from duanka.data.contract import APPLICATIONS, LABELS, Column, Kind, Table
from duanka.data.reader import Encoding, RawTable, UnusableFile, read_raw
from duanka.data.validate import validate

SAMPLES = Path(__file__).parent / "fixtures" / "contract"
LABELS_HEADER = "application_id,confirmed_at,source\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def as_parquet(raw: RawTable, path: Path) -> Path:
    strings = raw.frame.drop(columns="row")
    pq.write_table(pa.table({name: pa.array(strings[name], pa.string()) for name in strings}), path)
    return path


@pytest.fixture(scope="module")
def samples() -> RawTable:
    return read_raw(SAMPLES / "applications.csv", APPLICATIONS)


def test_every_contract_column_is_read_as_python_strings_or_none(samples):
    frame = samples.frame
    assert list(frame.columns) == [*APPLICATIONS.names, "row"]
    assert len(frame) == 200
    for name in APPLICATIONS.names:
        assert frame[name].map(lambda v: v is None or type(v) is str).all(), name
    assert frame["row"].tolist() == list(range(1, 201))
    assert samples.source == "applications.csv"
    assert samples.extra_columns == ()


def test_an_empty_cell_is_none(samples):
    first_personal = samples.frame[samples.frame["account_type"] == "personal"].iloc[0]
    assert first_personal["company_id"] is None
    assert first_personal["onsite_verified"] is None


def test_values_are_not_coerced(tmp_path):
    path = write(
        tmp_path / "labels.csv",
        LABELS_HEADER + "007,2024-01-01,True\n0X1,2024-01-02T00:00:00+08:00, police_notice \n",
    )
    frame = read_raw(path, LABELS).frame
    assert frame["application_id"].tolist() == ["007", "0X1"]
    assert frame["source"].tolist() == ["True", " police_notice "]
    assert frame["confirmed_at"].tolist() == ["2024-01-01", "2024-01-02T00:00:00+08:00"]


def test_identity_numbers_keep_their_check_character_as_written(samples):
    assert "44011319860228924x" in samples.frame["id_number"].tolist()


def test_csv_and_parquet_give_the_same_table(samples, tmp_path):
    parquet = read_raw(as_parquet(samples, tmp_path / "applications.parquet"), APPLICATIONS)
    pd.testing.assert_frame_equal(parquet.frame, samples.frame)
    assert parquet.source == "applications.parquet"


def test_typed_parquet_columns_become_canonical_strings(tmp_path):
    shanghai = timezone(timedelta(hours=8))
    path = tmp_path / "typed.parquet"
    pq.write_table(
        pa.table(
            {
                "flag": pa.array([True, False, None]),
                "count": pa.array([7, 0, None], pa.int32()),
                "aware": pa.array(
                    [datetime(2024, 3, 5, 10, 12, tzinfo=shanghai), None, None],
                    pa.timestamp("us", tz="+08:00"),
                ),
                "naive": pa.array([datetime(2024, 3, 5, 10, 12, 0, 500), None, None]),
                "day": pa.array([date(2024, 3, 5), None, None]),
                "ratio": pa.array([12.0, None, None]),
            }
        ),
        path,
    )
    names = ("flag", "count", "aware", "naive", "day", "ratio")
    table = Table("typed", tuple(Column(n, Kind.STRING, nullable=True) for n in names), key=None)
    first = read_raw(path, table).frame.iloc[0].to_dict()
    assert first == {
        "flag": "true",
        "count": "7",
        "aware": "2024-03-05T10:12:00.000000+0800",
        "naive": "2024-03-05T10:12:00.000500",
        "day": "2024-03-05",
        # a float keeps its decimal point, so the validator can refuse it as an integer
        "ratio": "12.0",
        "row": 1,
    }
    assert read_raw(path, table).frame.iloc[1].drop("row").tolist() == ["false", "0"] + [None] * 4


def test_typed_parquet_validates_to_the_same_rows_as_csv(samples, tmp_path):
    from_csv = validate(samples, APPLICATIONS).valid
    path = tmp_path / "typed.parquet"
    from_csv.drop(columns=["row", "age", "gender", "home_region"]).to_parquet(path)
    from_parquet = validate(read_raw(path, APPLICATIONS), APPLICATIONS).valid
    pd.testing.assert_frame_equal(from_parquet, from_csv)


def test_a_missing_required_column_makes_the_file_unusable_and_is_named(samples, tmp_path):
    frame = samples.frame.drop(columns=["row", "phone", "address"])
    path = tmp_path / "applications.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(UnusableFile) as refused:
        read_raw(path, APPLICATIONS)
    message = str(refused.value)
    assert message.startswith("applications.csv: missing required column(s) phone, address;")
    assert "header must name every contract column" in message


def test_a_missing_nullable_column_is_read_as_all_null(samples, tmp_path):
    path = tmp_path / "applications.csv"
    samples.frame.drop(columns=["row", "escort_id"]).to_csv(path, index=False)
    frame = read_raw(path, APPLICATIONS).frame
    assert list(frame.columns) == [*APPLICATIONS.names, "row"]
    assert frame["escort_id"].map(lambda v: v is None).all()


def test_extra_columns_are_reported_and_left_out():
    raw = read_raw(SAMPLES / "invalid_applications.csv", APPLICATIONS)
    assert raw.extra_columns == ("expected_column", "defect")
    assert "defect" not in raw.frame.columns


def test_a_byte_order_mark_does_not_hide_the_first_column(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(("\ufeff" + LABELS_HEADER + "A1,2024-01-01,police_notice\n").encode())
    assert read_raw(path, LABELS).frame["application_id"].tolist() == ["A1"]


def test_a_quoted_line_break_stays_inside_its_value(tmp_path):
    path = write(tmp_path / "labels.csv", LABELS_HEADER + '"A\n1",2024-01-01,x\nA2,2024-01-01,x\n')
    frame = read_raw(path, LABELS).frame
    assert frame["application_id"].tolist() == ["A\n1", "A2"]
    assert frame["row"].tolist() == [1, 2]


@pytest.mark.parametrize(
    "body",
    ["A1,2024-01-01,警方通报\n", "A1,2024-01-01,x\n" * 3 + "A4,2024-01-01,警方\n"],
    ids=["first row", "later row"],
)
def test_a_file_that_is_not_utf8_is_unusable(tmp_path, body):
    path = tmp_path / "labels.csv"
    path.write_bytes((LABELS_HEADER + body).encode("gbk"))
    with pytest.raises(UnusableFile, match=r"^labels\.csv: the file is not UTF-8 text; .*--encoding gb18030"):
        read_raw(path, LABELS)


def refusal(path: Path, encoding: Encoding = Encoding.UTF8) -> str:
    """The message a labels file is refused with."""
    with pytest.raises(UnusableFile) as refused:
        read_raw(path, LABELS, encoding)
    return str(refused.value)


ADVICE = "quote values that contain commas or line breaks"


def malformed(path: Path, encoding: Encoding = Encoding.UTF8) -> tuple[list[int], list[tuple[int, str]]]:
    """The data rows a labels file is read with, and its records left out for their width."""
    raw = read_raw(path, LABELS, encoding)
    lines = raw.malformed
    assert (lines["column"] == "*").all() and lines["application_id"].isna().all()
    return raw.frame["row"].tolist(), list(zip(lines["row"], lines["reason"], strict=True))


def test_a_row_of_the_wrong_width_is_quarantined_alone_by_data_row_and_line_without_quoting_it(tmp_path):
    path = write(
        tmp_path / "labels.csv",
        LABELS_HEADER + "A1,2024-01-01,x\n13800138000,2024-01-01\nA3,2024-01-01,x\n",
    )
    rows, left_out = malformed(path)
    assert rows == [1, 3]  # nothing good is lost, and every row keeps its number
    assert left_out == [(2, f"has 2 fields where the header has 3 (line 3 of the file); {ADVICE}")]
    assert "13800138000" not in str(left_out)


def test_a_ragged_row_after_multi_line_values_is_named_as_the_quarantine_names_rows(tmp_path):
    # data row 1 spans lines 2-5, so the ragged data row 3 is line 7 of the file
    path = write(
        tmp_path / "labels.csv",
        LABELS_HEADER
        + '"A\n1",2024-01-01,"a\nb\nc"\nA2,2024-01-01,x\n13800138000,2024-01-01\nA4,2024-01-01,x\n',
    )
    rows, left_out = malformed(path)
    assert rows == [1, 2, 4]
    assert left_out == [(3, f"has 2 fields where the header has 3 (line 7 of the file); {ADVICE}")]
    # mended, the row is read as data row 3: the number the quarantine gave it
    write(path, path.read_text(encoding="utf-8").replace("13800138000,2024-01-01\n", "A3,2024-01-01,x\n"))
    frame = read_raw(path, LABELS).frame
    assert frame.loc[frame["application_id"] == "A3", "row"].tolist() == [3]


def test_every_ragged_row_is_quarantined_and_the_rest_read(tmp_path):
    # a blank line (line 4) is no data row, for the reader as for the quarantine
    path = write(
        tmp_path / "labels.csv",
        LABELS_HEADER + "A1,2024-01-01\nA2,2024-01-01,x\n\nA3\nA4,2024-01-01,x,y\nA5,2024-01-01,x\n",
    )
    rows, left_out = malformed(path)
    assert rows == [2, 5]
    assert left_out == [
        (1, f"has 2 fields where the header has 3 (line 2 of the file); {ADVICE}"),
        (3, f"has 1 field where the header has 3 (line 5 of the file); {ADVICE}"),
        (4, f"has 4 fields where the header has 3 (line 6 of the file); {ADVICE}"),
    ]


def test_thousands_of_ragged_rows_are_each_quarantined(tmp_path):
    path = write(tmp_path / "labels.csv", LABELS_HEADER + "A0,2024-01-01,x\n" + "A1,2024-01-01\n" * 1234)
    rows, left_out = malformed(path)
    assert rows == [1] and [row for row, _ in left_out] == list(range(2, 1236))


def test_ragged_rows_reach_the_quarantine_beside_the_other_defects(tmp_path):
    from duanka.data.validate import validate

    body = "A1,2024-01-01\nA2,not a date,police_notice\nA3,2024-01-01,police_notice\n"
    path = write(tmp_path / "labels.csv", LABELS_HEADER + body)
    checked = validate(read_raw(path, LABELS), LABELS)
    assert checked.valid["application_id"].tolist() == ["A3"]
    assert checked.rejections[["row", "column"]].values.tolist() == [[1, "*"], [2, "confirmed_at"]]


_MULTI_LINE_THEN_RAGGED = LABELS_HEADER + 'A1,2024-01-01,"警方\n通报"\nA2,2024-01-01\nA3,2024-01-01,x\n'


@pytest.mark.parametrize(
    ("content", "encoding"),
    [
        (_MULTI_LINE_THEN_RAGGED.replace("\n", "\r\n").encode(), Encoding.UTF8),
        ("\ufeff".encode() + _MULTI_LINE_THEN_RAGGED.encode(), Encoding.UTF8),
        (_MULTI_LINE_THEN_RAGGED.encode("gb18030"), Encoding.GB18030),
        (_MULTI_LINE_THEN_RAGGED.replace("\n", "\r\n").encode("gb18030"), Encoding.GB18030),
    ],
    ids=["crlf", "byte-order mark", "gb18030", "gb18030 crlf"],
)
def test_a_ragged_row_is_named_alike_whatever_the_line_endings_and_encoding(tmp_path, content, encoding):
    path = tmp_path / "labels.csv"
    path.write_bytes(content)
    rows, left_out = malformed(path, encoding)
    assert rows == [1, 3]
    assert left_out == [(2, f"has 2 fields where the header has 3 (line 4 of the file); {ADVICE}")]
    assert "警方" not in str(left_out)


def test_an_unclosed_quote_is_named_where_it_opens(tmp_path):
    # the rest of the file becomes one value, longer than Python's csv module takes
    rest = "A3,2024-01-01,x\n" * (csv.field_size_limit() // 10)
    path = write(tmp_path / "labels.csv", LABELS_HEADER + 'A1,2024-01-01,x\n"A2,2024-01-01,x\n' + rest)
    assert refusal(path) == (
        f"labels.csv: data row 2 (line 3 of the file) has a value over {csv.field_size_limit():,} "
        "characters long (a quote never closed?); quote values that contain commas or line breaks"
    )


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("labels.xlsx", b"PK", r"unknown file type '\.xlsx'"),
        ("labels.csv", b"", "the file is empty"),
        ("labels.csv", b"application_id,confirmed_at,source,source\n", "source appear more than"),
        ("labels.parquet", b"not parquet at all", "not a readable Parquet file"),
    ],
)
def test_files_that_cannot_be_read_are_unusable(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnusableFile, match=message):
        read_raw(path, LABELS)


def test_a_file_without_a_header_is_refused_without_quoting_its_first_row(samples, tmp_path):
    path = tmp_path / "applications.csv"
    samples.frame.drop(columns="row").to_csv(path, index=False, header=False)
    first = samples.frame.iloc[0]
    with pytest.raises(UnusableFile, match="missing required column") as refused:
        read_raw(path, APPLICATIONS)
    for name in ("id_number", "phone", "address", "company_id"):
        assert first[name] not in str(refused.value)


def test_a_parquet_column_without_a_string_form_is_unusable(tmp_path):
    path = tmp_path / "labels.parquet"
    pq.write_table(
        pa.table({"application_id": [b"A1"], "confirmed_at": ["2024-01-01"], "source": ["x"]}),
        path,
    )
    with pytest.raises(UnusableFile, match="column application_id has Parquet type binary"):
        read_raw(path, LABELS)


def test_a_file_that_does_not_exist_is_unusable(tmp_path):
    with pytest.raises(UnusableFile, match="cannot be opened"):
        read_raw(tmp_path / "labels.csv", LABELS)


@pytest.mark.parametrize(
    ("typed", "encoding"),
    [
        ("utf-8", Encoding.UTF8),
        ("UTF8", Encoding.UTF8),
        ("utf-8-sig", Encoding.UTF8),
        ("UTF_8", Encoding.UTF8),
        ("gb18030", Encoding.GB18030),
        ("GBK", Encoding.GB18030),
        ("gb2312", Encoding.GB18030),
        (" CP936 ", Encoding.GB18030),
    ],
)
def test_encodings_are_read_as_people_type_them(typed, encoding):
    assert Encoding.named(typed) is encoding


def test_an_unknown_encoding_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown encoding 'latin-1'; known \(any case\): utf-8, utf8"):
        Encoding.named("latin-1")
