"""streams.logs: JSON lines with the fields log collectors index, text otherwise."""

from __future__ import annotations

import io
import logging
import logging.config
from datetime import datetime

import orjson
import pytest

from streams.logs import JsonFormatter, faust_logging_config, formatter


def _record(msg: str = "processed %d events", *args: object, **extra: object) -> logging.LogRecord:
    record = logging.getLogger("streams.runtime.worker").makeRecord(
        "streams.runtime.worker", logging.WARNING, __file__, 1, msg, args or (3,), None)
    record.__dict__.update(extra)
    return record


def test_a_record_is_one_json_object_with_ts_level_logger_message():
    line = JsonFormatter().format(_record())
    assert "\n" not in line
    out = orjson.loads(line)
    assert out.pop("level") == "WARNING"
    assert out.pop("logger") == "streams.runtime.worker"
    assert out.pop("message") == "processed 3 events"
    ts = datetime.fromisoformat(out.pop("ts"))
    assert ts.utcoffset().total_seconds() == 0
    assert out == {}  # nothing of the LogRecord's own attributes leaks


def test_extra_fields_are_kept_and_unencodable_values_become_text():
    out = orjson.loads(JsonFormatter().format(_record(topic="plays", partition=3,
                                                      where=object)))
    assert out["topic"] == "plays" and out["partition"] == 3
    assert out["where"] == str(object)


def test_an_exception_is_one_line_with_its_traceback():
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.getLogger("x").makeRecord("x", logging.ERROR, __file__, 1, "failed", (),
                                                   __import__("sys").exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: bad\nvalue" in orjson.loads(line)["exc"]


def test_text_format_is_the_plain_line():
    text = formatter("text").format(_record())
    assert text.endswith("WARNING streams.runtime.worker: processed 3 events")


@pytest.mark.parametrize("name", ["faust.worker", "aiokafka.consumer.group_coordinator", "mode"])
def test_faust_logging_config_formats_faust_and_aiokafka_loggers_as_json(
        name: str, monkeypatch: pytest.MonkeyPatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logging.config.dictConfig(faust_logging_config("json", level="info"))
        logging.getLogger(name).info("joined group %s", "g1")
        logging.getLogger(name).debug("not at info level")
    finally:
        root.handlers[:], root.level = saved
    lines = stream.getvalue().splitlines()
    assert [orjson.loads(line)["message"] for line in lines] == ["joined group g1"]
    assert orjson.loads(lines[0])["logger"] == name


def test_text_leaves_faust_its_own_logging():
    assert faust_logging_config("text", level="info") is None
