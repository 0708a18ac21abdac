"""Unit tests (fast, no services): parsing, checking and redacting job options."""

from __future__ import annotations

import pytest

from pdftasks.errors import InvalidJobError, InvalidOptionsError
from pdftasks.limits import DataLimits
from pdftasks.options import (
    JobOptions,
    parse_options,
    redact_options,
    redacted_paths,
)
from pdftasks.worker.checks import check_arguments


def test_absent_or_empty_options_are_none() -> None:
    assert parse_options(None) is None
    assert parse_options({}) is None


def test_valid_options_parse_to_a_model() -> None:
    opts = parse_options({"split": {"key": "rows", "size": 1000}})
    assert isinstance(opts, JobOptions)
    assert opts.split is not None and (opts.split.key, opts.split.size) == ("rows", 1000)
    assert parse_options(opts) is opts


@pytest.mark.parametrize(("raw", "where"), [
    ([1, 2], "options must be a JSON object"),
    ({"colour": "red"}, "options.colour"),
    ({"split": {"key": "rows", "size": 0}}, "options.split.size"),
    ({"split": {"key": "../etc", "size": 10}}, "options.split.key"),
    ({"split": {"key": "rows"}}, "options.split.size"),
])
def test_bad_options_name_the_option(raw, where) -> None:
    with pytest.raises(InvalidOptionsError, match=where.replace(".", r"\.")) as info:
        parse_options(raw)
    assert isinstance(info.value, InvalidJobError)  # permanent: never retried


def test_secrets_are_redacted_in_a_copy() -> None:
    raw = {"encrypt": {"user_password": "u-secret", "owner_password": "o-secret"},
           "split": {"key": "rows", "size": 5}}
    red = redact_options(raw)
    assert "u-secret" not in repr(red) and "o-secret" not in repr(red)
    assert red["split"] == raw["split"]
    assert raw["encrypt"]["owner_password"] == "o-secret"  # the original is untouched
    assert sorted(redacted_paths(red)) == ["encrypt.owner_password", "encrypt.user_password"]
    assert redacted_paths(raw) == [] and redact_options(None) == {}


def test_the_worker_checks_options_of_a_queued_message() -> None:
    bound = {"template": "invoice.html", "data": {}, "output_filename": "a.pdf",
             "options": {"nope": 1}}
    with pytest.raises(InvalidOptionsError, match=r"options\.nope"):
        check_arguments(bound, DataLimits())
    check_arguments({**bound, "options": None}, DataLimits())
