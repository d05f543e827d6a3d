"""Batch request and result files are read by the one JSONL reader: a BOM is skipped, and the
first unusable line is one error naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from expertprompting import ConfigurationError
from expertprompting.batch import read_results

OK = {"custom_id": "a", "response": {"status_code": 200, "body": {"choices": []}}}


def test_a_bom_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(OK).encode() + b"\n")
    assert set(read_results(path)) == {"a"}


def test_bad_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(json.dumps(OK).encode() + b"\n" + b'{"custom_id": "\xff"}\n')
    with pytest.raises(ConfigurationError, match=r"results\.jsonl:2 is not a batch result line"):
        read_results(path)


def test_a_row_without_custom_id_and_a_response_of_the_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"response": {}}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r":1 is not a batch result line \(no custom_id\)"):
        read_results(path)
    path.write_text(json.dumps({"custom_id": "b", "response": "oops"}) + "\n", encoding="utf-8")
    result = read_results(path)["b"]
    assert result.response is None
    assert result.error is not None
    assert "HTTP None" in result.error


def test_a_utf16_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(json.dumps(OK).encode("utf-16"))
    with pytest.raises(ConfigurationError, match="UTF-16") as caught:
        read_results(path)
    assert "\n" not in str(caught.value)
