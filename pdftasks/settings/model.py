"""``Settings``: the topic models composed into one, read from ``PDFTASKS_*`` variables."""

from __future__ import annotations

import functools
from typing import TypeVar, cast

from pydantic_settings import BaseSettings, SettingsConfigDict

from pdftasks.settings.api import ApiSettings
from pdftasks.settings.aws import AwsSettings
from pdftasks.settings.base import ENV_PREFIX, TopicModel
from pdftasks.settings.beat import BeatSettings
from pdftasks.settings.core import CoreSettings
from pdftasks.settings.documents import DocumentSettings
from pdftasks.settings.ops import OpsSettings

_Topic = TypeVar("_Topic", bound=TopicModel)

#: The topic models, in the order of the settings reference (docs/reference/settings.md);
#: every field of ``Settings`` is a field of exactly one of them.
TOPICS: tuple[type[TopicModel], ...] = (
    CoreSettings, BeatSettings, ApiSettings, OpsSettings, AwsSettings, DocumentSettings)


# The bases are listed last topic first: pydantic orders the fields of a model from its last
# base's to its first's, so model_fields (and repr, model_dump, to_env) follow TOPICS.
class Settings(DocumentSettings, AwsSettings, OpsSettings, ApiSettings, BeatSettings, CoreSettings,
               BaseSettings):
    """All pdftasks settings. Environment variable = ``PDFTASKS_`` + field name in capitals."""

    # The fields and validators are those of the topic models (flat: s.api_keys,
    # s.broker_url); s.core, s.beat, s.api, s.ops and s.aws give one topic alone (read-only,
    # built from these values) for code that needs only that part.

    # Unlike the topic models, not frozen (as before the split): code may set a field.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=False,
                                      validate_default=True, hide_input_in_errors=True)
    # Not hashable, as a mutable model (the frozen topic bases would lend it their hash).
    __hash__ = None  # type: ignore[assignment]

    def _topic(self, topic: type[_Topic]) -> _Topic:
        # The values are validated already, by the topic's own validators (inherited).
        values = {}
        for name in topic.model_fields:
            value = getattr(self, name)
            values[name] = list(value) if isinstance(value, list) else value  # not shared
        view = topic.model_construct(self.model_fields_set & values.keys(), **values)
        return cast(_Topic, view)  # the mypy plugin types it as returning TopicModel

    @property
    def core(self) -> CoreSettings:
        """Broker, directories, workers, limits; retries, job records, hooks."""
        return self._topic(CoreSettings)

    @property
    def beat(self) -> BeatSettings:
        """The beat schedule's settings."""
        return self._topic(BeatSettings)

    @property
    def api(self) -> ApiSettings:
        """The HTTP API's and webhooks' settings."""
        return self._topic(ApiSettings)

    @property
    def ops(self) -> OpsSettings:
        """Logs, heartbeat, Flower, Prometheus."""
        return self._topic(OpsSettings)

    @property
    def aws(self) -> AwsSettings:
        """SQS, DynamoDB, S3."""
        return self._topic(AwsSettings)

    @property
    def documents(self) -> DocumentSettings:
        """The signing profile of the ``sign`` job option."""
        return self._topic(DocumentSettings)

    # Derived from more than one topic.

    @property
    def effective_result_backend(self) -> str:
        if self.result_backend:
            return self.result_backend
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        if self.is_sqs:  # results as items of the job table (pdftasks.brokers.sqs)
            return f"pdftasks.brokers.sqs.DynamoDBResultBackend+dynamodb://{self.dynamodb_table}"
        return f"file://{self.home / 'results'}"

    @property
    def effective_job_store_url(self) -> str:
        """Job records: the Redis broker's server, DynamoDB with SQS, else SQLite."""
        if self.job_store_url:
            return self.job_store_url
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        if self.is_sqs:
            return f"dynamodb://{self.dynamodb_table}"
        return f"sqlite:///{self.home / 'jobs.sqlite3'}"


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
