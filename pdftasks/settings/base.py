"""What the topic models of :mod:`pdftasks.settings` share: the strict base model (unknown
keys named, ``CHANGE-ME`` placeholders refused, URL passwords hidden in ``repr``), the list
type, ``redact_url`` and the helpers of the generated settings table."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, NamedTuple

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode

#: A value that example deployment files use for secrets; refused in any setting.
PLACEHOLDER = "CHANGE-ME"

ENV_PREFIX = "PDFTASKS_"

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@")


def redact_url(text: str) -> str:
    """``text`` with the password of any ``scheme://user:password@`` replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def _comma_list(value: object) -> object:
    """The environment's comma-separated form of a list setting (blanks dropped)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [str(part).strip() for part in value if str(part).strip()]
    return value


def none_is_derived(value: object, handler: Any) -> object:
    """Wrap validator: None (the default, or a dump of derived settings) stays None, for a
    model validator to compute the value."""
    return None if value is None else handler(value)


#: A list setting: ``a,b,c`` in the environment (not JSON), a list or that string in code.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]


def shown(default: str) -> dict[str, Any]:
    """The default as the settings reference shows it, when it is computed
    (``json_schema_extra``)."""
    return {"shown_default": default}


class OtherVariable(NamedTuple):
    """A ``PDFTASKS_*`` variable read outside the settings model, shown in its topic's table."""

    name: str  # after the prefix
    default: str
    description: str
    after: str  # the field whose row it follows


class TopicModel(BaseModel):
    """Base of the topic models (``CoreSettings`` …): strict, validated, read-only.

    A topic model is one part of :class:`pdftasks.settings.Settings`, which inherits its
    fields and validators; ``settings.core``, ``settings.api`` … give it alone, built from
    the same values, for code that needs only that part.
    """

    # Errors do not echo the input: it holds secrets and URLs with passwords. Defaults are
    # validated (directories made absolute) as in the environment-reading Settings.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True,
                              hide_input_in_errors=True)

    #: Heading of the topic's first section in the settings reference.
    table_title: ClassVar[str] = ""
    #: Further sections of the table: first field of the section → its heading.
    table_sections: ClassVar[dict[str, str]] = {}
    #: Variables read elsewhere that the topic's table lists too.
    other_variables: ClassVar[tuple[OtherVariable, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, values: Any) -> Any:
        # The environment source only reads known fields; unknown keys come from code
        # (Settings(...), PDFQueueManager(settings=...)): name them, with a suggestion.
        if isinstance(values, dict):
            unknown = sorted(str(k) for k in values if k not in cls.model_fields)
            if unknown:
                hints = []
                for key in unknown:
                    close = difflib.get_close_matches(key.lower(), cls.model_fields, n=1,
                                                      cutoff=0.7)
                    hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close
                                               else ""))
                raise ValueError("unknown setting " + ", ".join(hints)
                                 + " (see docs/reference/settings.md)")
        return values

    @field_validator("*")
    @classmethod
    def _no_placeholder(cls, value: object) -> object:
        # Example deployments carry CHANGE-ME secrets; starting with one is a mistake.
        texts = value if isinstance(value, list) else [value]
        for text in texts:
            raw = text.get_secret_value() if isinstance(text, SecretStr) else text
            if isinstance(raw, str) and PLACEHOLDER in raw.upper():
                raise ValueError(f"still has a {PLACEHOLDER} placeholder: set a real value")
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # SecretStr fields show as '**********'; URLs may carry passwords too.
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if isinstance(value, str) else value

    def to_env(self) -> dict[str, str]:
        """These settings as ``PDFTASKS_*`` variables (for worker subprocesses): the real
        values, secrets included; lists comma-separated."""
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = str(value).lower()
            elif isinstance(value, list):
                value = ",".join(value)
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return env
