"""One exception hierarchy for pdftasks.

Whether an error is worth retrying is a property of its class: ``PermanentError``
subclasses fail the job at once, ``TransientError`` subclasses are retried with
exponential backoff (see ``pdftasks.worker.tasks``).
"""

from __future__ import annotations


class PdfTasksError(Exception):
    """Root of every error raised by pdftasks."""

    #: True when retrying the same job cannot succeed.
    permanent: bool = True


class PermanentError(PdfTasksError):
    """The job cannot succeed as submitted; it is not retried."""

    permanent = True


class TransientError(PdfTasksError):
    """A passing failure (storage, broker, resources); the job is retried."""

    permanent = False


# Bad input: detected at submit time where possible, otherwise a FAILED job.


class InvalidJobError(PermanentError, ValueError):
    """The job's arguments are wrong."""


class TemplateNotFoundError(InvalidJobError):
    """The template (or CSS file) does not exist in the templates directory."""


class TemplateSyntaxError(InvalidJobError):
    """The template does not compile."""


class MissingVariableError(InvalidJobError):
    """The template uses a variable that the job's data does not provide."""


class TemplateSecurityError(InvalidJobError):
    """The template tried something the sandbox forbids."""


class UnsafePathError(InvalidJobError):
    """A template, CSS or output name tries to leave its directory."""


class InvalidPriorityError(InvalidJobError):
    """The priority is not one of urgent, high, normal, low (or 0-3)."""


class InvalidDataError(InvalidJobError):
    """The job's data is not a JSON object, not JSON-serializable, or too large."""


class DataTypeError(InvalidDataError):
    """A value in the job's data has the wrong type for the template (a string where the
    template expects an object or a list, text where it computes with numbers)."""


class InvalidOptionsError(InvalidJobError):
    """A job option is unknown, has a bad value, or cannot be combined with another."""


class EInvoiceDataError(InvalidDataError):
    """The job's data cannot make a valid e-invoice (a field missing or wrong, totals that
    do not add up, or XML the profile's schema rejects); the message says which."""


class DocumentOptionError(PermanentError):
    """A document option could not be applied to this job (an attachment file missing, a
    merge part that is not a completed job of the same tenant, no signing profile on the
    workers); the message says which."""


class TimestampUnavailableError(TransientError):
    """The timestamp authority of a B-T signature did not answer; the job is retried."""


class UnsafeResourceError(PermanentError):
    """The document referenced a URL that pdftasks does not fetch (local file, network)."""


class RenderTimeoutError(PermanentError):
    """The render exceeded its time limit (a runaway template)."""


class RenderMemoryError(PermanentError):
    """The render exceeded its memory limit."""


class RenderError(PermanentError):
    """WeasyPrint failed on the document."""


# Infrastructure: retried.


class StorageError(TransientError):
    """The PDF could not be written (disk full, permissions, remote storage)."""


class BrokerUnavailableError(TransientError):
    """The broker cannot be reached; the job was not queued."""


class JobNotFoundError(PdfTasksError, KeyError):
    """No job with this id is known."""
