"""Typed settings, read once from ``PDFTASKS_*`` environment variables.

Precedence: arguments of a single job > ``PDFTASKS_*`` environment > the defaults.
:class:`Settings` is composed of one model per topic, each in its own module, with its
fields, validators and table headings: :mod:`~pdftasks.settings.core` (broker, directories,
workers, limits; jobs), :mod:`~pdftasks.settings.beat`, :mod:`~pdftasks.settings.api`,
:mod:`~pdftasks.settings.ops`, :mod:`~pdftasks.settings.aws` and
:mod:`~pdftasks.settings.documents` (the signing profile). Its fields are flat
(``s.api_keys``; variable ``PDFTASKS_API_KEYS``); ``s.api``, ``s.core`` … give one topic
alone, for code that needs only that part (e.g. ``ApiSettings`` for the HTTP API).

Every field has a ``description``; the settings reference (docs/reference/settings.md) is
generated from them (:mod:`~pdftasks.settings.table`: ``python -m pdftasks.settings --markdown``, or
``--write docs/reference/settings.md``; a unit test checks that it is up to date).

Explicit construction is strict: ``Settings(typo=1)`` raises, naming the unknown key.
Unknown ``PDFTASKS_*`` environment variables are ignored (``PDFTASKS_SCHEDULE_<NAME>`` is
read by :mod:`pdftasks.contrib.beat`). Secrets are :class:`pydantic.SecretStr`
(``.get_secret_value()`` gives the value), and ``repr()`` hides URL passwords;
:meth:`Settings.to_env` gives the real values (for worker subprocesses).
"""

from pdftasks.limits import (
    MAX_DATA_BYTES,
    MAX_DATA_DEPTH,
    MAX_DATA_ITEMS,
    MAX_DATA_KEYS,
    MAX_DATA_STRING,
)
from pdftasks.settings.api import ApiSettings
from pdftasks.settings.aws import AwsSettings
from pdftasks.settings.base import (
    ENV_PREFIX,
    PLACEHOLDER,
    CommaList,
    OtherVariable,
    TopicModel,
    redact_url,
)
from pdftasks.settings.beat import BeatSettings
from pdftasks.settings.core import (
    HARD_TIME_LIMIT_S,
    JOB_RETENTION_S,
    MAX_MEMORY_PER_CHILD_MB,
    RENDER_MEMORY_LIMIT_MB,
    RESULT_EXPIRES_S,
    SOFT_TIME_LIMIT_S,
    SQS_MAX_VISIBILITY_TIMEOUT_S,
    VISIBILITY_TIMEOUT_S,
    CoreSettings,
)
from pdftasks.settings.documents import DocumentSettings
from pdftasks.settings.model import TOPICS, Settings, get_settings
from pdftasks.settings.ops import OpsSettings
from pdftasks.settings.table import (
    GROUPS,
    OTHER_VARIABLES,
    TABLE_END,
    TABLE_START,
    main,
    readme_with_table,
    settings_table,
)

__all__ = [
    "ENV_PREFIX", "GROUPS", "HARD_TIME_LIMIT_S", "JOB_RETENTION_S", "MAX_DATA_BYTES",
    "MAX_DATA_DEPTH", "MAX_DATA_ITEMS", "MAX_DATA_KEYS", "MAX_DATA_STRING",
    "MAX_MEMORY_PER_CHILD_MB", "OTHER_VARIABLES", "PLACEHOLDER", "RENDER_MEMORY_LIMIT_MB",
    "RESULT_EXPIRES_S", "SOFT_TIME_LIMIT_S", "SQS_MAX_VISIBILITY_TIMEOUT_S", "TABLE_END",
    "TABLE_START", "TOPICS", "VISIBILITY_TIMEOUT_S", "ApiSettings", "AwsSettings",
    "BeatSettings", "CommaList", "CoreSettings", "DocumentSettings", "OpsSettings",
    "OtherVariable", "Settings", "TopicModel", "get_settings", "main", "readme_with_table",
    "redact_url", "settings_table",
]
