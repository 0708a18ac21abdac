"""The settings model: documented fields, the generated README table, strict construction,
secrets, list settings, validators that refuse instead of silently changing values, and the
composition of Settings from its topic models (core, beat, api, ops, aws)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from pdftasks.settings import (
    GROUPS,
    OTHER_VARIABLES,
    TABLE_END,
    TABLE_START,
    TOPICS,
    ApiSettings,
    AwsSettings,
    BeatSettings,
    CoreSettings,
    DocumentSettings,
    OpsSettings,
    Settings,
    TopicModel,
    readme_with_table,
    redact_url,
    settings_table,
)

#: The docs page with the settings table (the docs build regenerates it too).
README = Path(__file__).resolve().parents[2] / "docs" / "reference" / "settings.md"


def test_every_field_has_a_description() -> None:
    missing = [name for name, field in Settings.model_fields.items()
               if not (field.description or "").strip()]
    assert not missing, f"settings without a description: {missing}"


def test_every_field_is_in_exactly_one_group_of_the_table() -> None:
    listed = [name for _, names in GROUPS for name in names if name not in OTHER_VARIABLES]
    assert sorted(listed) == sorted(Settings.model_fields)


def test_readme_settings_table_is_generated_from_the_model() -> None:
    readme = README.read_text(encoding="utf-8")
    assert readme.count(TABLE_START) == 1 and readme.count(TABLE_END) == 1
    assert readme_with_table(readme) == readme, (
        "docs/reference/settings.md's settings table differs from pdftasks.settings.Settings: "
        "run `python -m pdftasks.settings --write docs/reference/settings.md`")


def test_table_has_one_row_per_variable() -> None:
    table = settings_table()
    for name in Settings.model_fields:
        assert table.count(f"| `PDFTASKS_{name.upper()}` |") == 1, name
    assert "| `PDFTASKS_SCHEDULE_<NAME>` |" in table


def test_unknown_keys_are_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="unknown setting 'typo_field'"):
        Settings(typo_field=1)
    with pytest.raises(ValidationError, match="did you mean 'broker_url'"):
        Settings(broker="redis://h")


def test_queue_manager_refuses_unknown_settings(tmp_path: Path) -> None:
    from pdftasks.client import LocalBackend, PDFQueueManager

    with pytest.raises(ValidationError, match="unknown setting 'typo'"):
        PDFQueueManager(backend=LocalBackend(tmp_path), settings={"typo": 1})


def test_unknown_environment_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDFTASKS_SCHEDULE_DAILY_REPORT", "08:30")
    monkeypatch.setenv("PDFTASKS_NOT_A_SETTING", "1")
    monkeypatch.setenv("PDFTASKS_WARMUP", "false")
    assert Settings().warmup is False


def test_secrets_are_hidden_but_reach_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDFTASKS_FLOWER_BASIC_AUTH", "admin:flower-pw")
    s = Settings(webhook_secret="hook-secret", api_keys="acme:" + "a" * 64,
                 broker_url="redis://:redis-pw@h:6379/0",
                 job_store_url="redis://user:store-pw@h:6379/1")
    assert isinstance(s.webhook_secret, SecretStr)
    assert s.webhook_secret.get_secret_value() == "hook-secret"
    assert s.flower_basic_auth is not None
    assert s.flower_basic_auth.get_secret_value() == "admin:flower-pw"
    for text in (repr(s), str(s)):
        for secret in ("hook-secret", "flower-pw", "a" * 64, "redis-pw", "store-pw"):
            assert secret not in text
    assert "redis://:***@h:6379/0" in repr(s)
    env = s.to_env()
    assert env["PDFTASKS_WEBHOOK_SECRET"] == "hook-secret"
    assert env["PDFTASKS_FLOWER_BASIC_AUTH"] == "admin:flower-pw"
    assert env["PDFTASKS_API_KEYS"] == "acme:" + "a" * 64
    assert env["PDFTASKS_BROKER_URL"] == "redis://:redis-pw@h:6379/0"
    assert s.effective_broker_url == "redis://:redis-pw@h:6379/0"
    monkeypatch.delenv("PDFTASKS_FLOWER_BASIC_AUTH")
    # Workers get the same settings back from that environment.
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    again = Settings()
    assert again.to_env() == env and again.webhook_secret == s.webhook_secret


def test_validation_errors_do_not_echo_secrets() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(webhook_secret="hook-secret", broker_url="redis://:redis-pw@h/0",
                 soft_time_limit_s=100, hard_time_limit_s=50)
    assert "hook-secret" not in str(info.value) and "redis-pw" not in str(info.value)


def test_redact_url() -> None:
    assert redact_url("sqs://KEY:SECRET@") == "sqs://KEY:***@"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redact_url("rediss://u:p%40ss@h:6380/0") == "rediss://u:***@h:6380/0"


def test_placeholder_secrets_are_refused() -> None:
    for field in ("webhook_secret", "flower_basic_auth", "api_keys"):
        with pytest.raises(ValidationError, match="CHANGE-ME"):
            Settings(**{field: "user:change-me"})
    with pytest.raises(ValidationError, match="CHANGE-ME"):
        Settings(webhook_allowed_hosts="ok.example,CHANGE-ME.example")


def test_list_settings_take_the_comma_separated_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDFTASKS_ALLOWED_URL_PREFIXES", " https://a.example/, ,https://b/ ")
    monkeypatch.setenv("PDFTASKS_WEBHOOK_ALLOWED_HOSTS", "hooks.internal,10.1.0.0/16")
    s = Settings()
    assert s.allowed_url_prefixes == ["https://a.example/", "https://b/"]
    assert s.url_prefixes == ("https://a.example/", "https://b/")
    assert s.webhook_allowed_hosts == ["hooks.internal", "10.1.0.0/16"]
    assert s.to_env()["PDFTASKS_WEBHOOK_ALLOWED_HOSTS"] == "hooks.internal,10.1.0.0/16"
    assert Settings(allowed_url_prefixes="https://x/").url_prefixes == ("https://x/",)
    assert Settings(allowed_url_prefixes=["https://x/"]).url_prefixes == ("https://x/",)
    monkeypatch.setenv("PDFTASKS_ALLOWED_URL_PREFIXES", "")
    assert Settings().url_prefixes == ()


def test_sqs_visibility_timeout_is_derived_or_refused() -> None:
    derived = Settings(broker_url="sqs://")
    assert derived.visibility_timeout_s == 600 + 90 + 60
    assert "visibility_timeout_s" not in derived.model_fields_set
    assert Settings(broker_url="sqs://", retry_backoff_max_s=1000).visibility_timeout_s == 1150
    with pytest.raises(ValidationError, match="at least 750 s"):
        Settings(broker_url="sqs://", visibility_timeout_s=600)
    assert Settings(broker_url="sqs://", visibility_timeout_s=750).visibility_timeout_s == 750
    with pytest.raises(ValidationError, match="43200"):
        Settings(broker_url="sqs://", retry_backoff_max_s=43200)


def test_derived_visibility_timeout_follows_a_broker_override() -> None:
    # PDFQueueManager builds Settings(**{**get_settings().model_dump(), **overrides}).
    redis = Settings(broker_url="redis://h:6379/0")
    assert redis.visibility_timeout_s == 600
    sqs = Settings(**{**redis.model_dump(), "broker_url": "sqs://"})
    assert sqs.visibility_timeout_s == 750
    back = Settings(**{**sqs.model_dump(), "broker_url": "redis://h:6379/0"})
    assert back.visibility_timeout_s == 600
    explicit = Settings(broker_url="redis://h:6379/0", visibility_timeout_s=900)
    assert Settings(**{**explicit.model_dump(), "broker_url": "sqs://"}) \
        .visibility_timeout_s == 900
    assert Settings(broker_url="sqs://").to_env()["PDFTASKS_VISIBILITY_TIMEOUT_S"] == "750"


def test_visibility_timeout_must_outlast_the_hard_limit() -> None:
    with pytest.raises(ValidationError, match="its default is 600 s"):
        Settings(soft_time_limit_s=600, hard_time_limit_s=700)
    with pytest.raises(ValidationError, match="HARD_TIME_LIMIT_S"):
        Settings(hard_time_limit_s=700, soft_time_limit_s=600, visibility_timeout_s=650)


def test_documented_normalisations() -> None:
    assert Settings(storage="s3://bucket-a/pdfs/").storage == "s3://bucket-a/pdfs"
    assert Settings(output_dir="out").output_dir == Path("out").resolve()


# Composition: Settings = the topic models' fields and validators; s.core, s.api … = one topic.

VIEWS: dict[str, type[TopicModel]] = {
    "core": CoreSettings, "beat": BeatSettings, "api": ApiSettings, "ops": OpsSettings,
    "aws": AwsSettings, "documents": DocumentSettings}


def test_every_field_belongs_to_exactly_one_topic() -> None:
    owners = Counter(name for topic in TOPICS for name in topic.model_fields)
    assert [name for name, n in owners.items() if n > 1] == []
    assert set(owners) == set(Settings.model_fields)
    # Settings keeps the topics' order (repr, model_dump, to_env) and their field definitions.
    assert list(Settings.model_fields) == [n for topic in TOPICS for n in topic.model_fields]
    for topic in TOPICS:
        assert issubclass(Settings, topic)
        for name, field in topic.model_fields.items():
            composed = Settings.model_fields[name]
            assert (composed.annotation, composed.description, composed.metadata) == \
                (field.annotation, field.description, field.metadata), name
    assert set(VIEWS.values()) == set(TOPICS)


def test_table_sections_come_from_the_topics() -> None:
    titles = [title for title, _ in GROUPS]
    assert [topic.table_title for topic in TOPICS] == [
        t for t in titles if t != "Jobs: retries, records, hooks"]
    jobs = dict(GROUPS)["Jobs: retries, records, hooks"]
    assert jobs[0] == "default_max_retries" and set(jobs) <= set(CoreSettings.model_fields)
    beat = dict(GROUPS)[BeatSettings.table_title]
    assert beat.index("SCHEDULE_<NAME>") == beat.index("schedule_file") + 1


def test_topic_views_hold_their_fields_and_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDFTASKS_API_KEYS", "acme:" + "a" * 64)
    monkeypatch.setenv("PDFTASKS_WEBHOOK_ALLOWED_HOSTS", "hooks.internal")
    monkeypatch.setenv("PDFTASKS_TIMEZONE", "Europe/Berlin")
    s = Settings(broker_url="sqs://", metrics_port=9000, storage="s3://bucket-a/pdfs/")
    for attr, topic in VIEWS.items():
        view = getattr(s, attr)
        assert type(view) is topic, attr
        assert dict(view) == {n: getattr(s, n) for n in topic.model_fields}, attr
        assert view.model_dump() == s.model_dump(include=set(topic.model_fields)), attr
        assert view.model_fields_set == s.model_fields_set & set(topic.model_fields)
        # A view is a valid topic model: validating its values alone gives it back.
        assert topic.model_validate(view.model_dump()) == view, attr
        assert view.to_env() == {k: v for k, v in s.to_env().items()
                                 if k.removeprefix("PDFTASKS_").lower() in topic.model_fields}
    assert s.api.api_keys.get_secret_value() == "acme:" + "a" * 64
    assert s.api.webhook_allowed_hosts == ["hooks.internal"]
    assert s.beat.timezone == "Europe/Berlin" and s.ops.metrics_port == 9000
    assert s.aws.storage == "s3://bucket-a/pdfs" and s.core.is_sqs
    assert s.core.visibility_timeout_s == 750  # derived, and dumped as derived (None)
    assert s.core.model_dump()["visibility_timeout_s"] is None
    assert not hasattr(s.api, "broker_url") and not hasattr(s.core, "api_keys")
    # Read-only snapshots: changing one cannot silently leave Settings behind.
    with pytest.raises(ValidationError, match="frozen"):
        s.api.api_rate_limit_per_min = 1  # type: ignore[misc]
    s.api.webhook_allowed_hosts.append("x")
    assert s.webhook_allowed_hosts == ["hooks.internal"]
    s.metrics_port = 9100  # Settings itself stays mutable, as before
    assert s.ops.metrics_port == 9100


def test_settings_rebuilt_from_its_topics() -> None:
    s = Settings(broker_url="redis://:pw@h:6379/0", webhook_secret="hook", concurrency=3,
                 allowed_url_prefixes="https://a/", dynamodb_table="jobs")
    values: dict[str, Any] = {}
    explicit: dict[str, Any] = {}
    for attr in VIEWS:
        values.update(getattr(s, attr).model_dump())
        explicit.update(getattr(s, attr).model_dump(exclude_unset=True))
    assert Settings(**values) == s and Settings(**values).to_env() == s.to_env()
    assert Settings(**explicit) == s
    assert Settings(**explicit).model_fields_set == s.model_fields_set


def test_topic_model_alone_is_strict() -> None:
    api = ApiSettings(api_rate_limit_per_min=5, webhook_allowed_hosts="a, b")
    assert api.api_rate_limit_per_min == 5 and api.webhook_allowed_hosts == ["a", "b"]
    assert api.to_env()["PDFTASKS_WEBHOOK_ALLOWED_HOSTS"] == "a,b"
    with pytest.raises(ValidationError, match="unknown setting 'broker_url'"):
        ApiSettings(broker_url="redis://h")  # type: ignore[call-arg]  # another topic
    with pytest.raises(ValidationError, match="did you mean 'api_open_health'"):
        ApiSettings(api_open_healt=False)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="unknown setting 'typo'"):
        CoreSettings.model_validate({"typo": 1})
    core = CoreSettings(home="state", broker_url="redis://:core-pw@h/0")
    assert core.home == Path("state").resolve() and core.visibility_timeout_s == 600
    assert "core-pw" not in repr(core) and "redis://:***@h/0" in repr(core)
    assert "api-secret" not in repr(ApiSettings(webhook_secret="api-secret"))


@pytest.mark.parametrize(("topic", "values", "message"), [
    (CoreSettings, {"soft_time_limit_s": 100, "hard_time_limit_s": 50}, "HARD_TIME_LIMIT_S"),
    (CoreSettings, {"broker_url": "sqs://", "visibility_timeout_s": 600}, "at least 750 s"),
    (BeatSettings, {"timezone": "Mars/Olympus_Mons"}, "unknown time zone"),
    (ApiSettings, {"webhook_secret": "change-me"}, "CHANGE-ME"),
    (OpsSettings, {"log_format": "xml"}, "pattern"),
    (OpsSettings, {"flower_basic_auth": "admin:CHANGE-ME"}, "CHANGE-ME"),
    (AwsSettings, {"storage": "ftp://bucket"}, "s3://bucket/prefix"),
])
def test_topic_validators_refuse_alone_and_in_settings(
        topic: type[TopicModel], values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        topic(**values)
    with pytest.raises(ValidationError, match=message):
        Settings(**values)


def test_cli_checks_the_readme() -> None:
    done = subprocess.run([sys.executable, "-m", "pdftasks.settings", "--check", str(README)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "pdftasks.settings", "--markdown"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == settings_table()
