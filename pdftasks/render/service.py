"""``PDFService``: renders templates to PDF (sandboxed Jinja2, then WeasyPrint) and writes
them to the storage. One per process keeps compiled templates, parsed stylesheets and
WeasyPrint's font configuration across jobs."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError

from pdftasks.documents.pipeline import set_metadata
from pdftasks.documents.sign import SigningProfile
from pdftasks.errors import (
    DataTypeError,
    InvalidJobError,
    InvalidOptionsError,
    MissingVariableError,
    PdfTasksError,
    RenderError,
    RenderMemoryError,
    TemplateNotFoundError,
    TemplateSecurityError,
    TemplateSyntaxError,
    UnsafeResourceError,
)
from pdftasks.limits import MAX_DATA_BYTES, DataLimits, check_data
from pdftasks.options import JobOptions, has_document_options
from pdftasks.options.document import DocumentMetadata
from pdftasks.render.fetcher import _make_fetcher, enable_stylesheet_cache
from pdftasks.render.sandbox import ConfinedLoader, LimitedSandbox, resolve_inside
from pdftasks.settings import Settings, get_settings
from pdftasks.storage import check_output_filename, make_storage

log = logging.getLogger(__name__)

_WARMUP_HTML = "<html><body><p>pdftasks warm-up 0123456789</p></body></html>"


class _ProgressAtDebug(logging.Filter):
    """WeasyPrint's ``Step 1 - Fetching and parsing HTML`` … lines as DEBUG records, passed on
    to the root logger's handlers only while DEBUG is on there."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        logging.getLogger(PROGRESS_LOGGER).propagate = \
            logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


#: The logger WeasyPrint writes its per-render steps to, at INFO (about 7 lines a PDF).
PROGRESS_LOGGER = "weasyprint.progress"


def quiet_progress_log() -> None:
    """Log WeasyPrint's per-render steps at DEBUG instead of INFO (in worker processes: the
    render service with ``cache_stylesheets``). Handlers attached to ``weasyprint.progress``
    itself (page progress) still receive every record."""
    progress = logging.getLogger(PROGRESS_LOGGER)
    if not any(isinstance(f, _ProgressAtDebug) for f in progress.filters):
        progress.addFilter(_ProgressAtDebug())


def skip_unwanted_progress() -> None:
    """Let WeasyPrint make its step records only while something would receive them: a
    handler on ``weasyprint.progress`` itself, or a root logger at DEBUG (checked before
    each render of a service that quiets them). With the root logger at INFO, as in a
    worker, each record was made (and its caller looked up) only for the filter to drop
    it: about 0.5% of a one-page invoice's render."""
    progress = logging.getLogger(PROGRESS_LOGGER)
    if progress.level not in (logging.NOTSET, _SKIP_PROGRESS):
        return  # a level somebody else set: theirs
    wanted = bool(progress.handlers) or logging.getLogger().isEnabledFor(logging.DEBUG)
    level = logging.NOTSET if wanted else _SKIP_PROGRESS
    if progress.level != level:  # setLevel clears every logger's cache: only on a change
        progress.setLevel(level)


#: The level ``skip_unwanted_progress`` gives ``weasyprint.progress`` (WARNING + 1, so that
#: a WARNING set by somebody else is told apart from it and left alone).
_SKIP_PROGRESS = logging.WARNING + 1


#: Jinja's message for an attribute looked up on a value: ``'str object' has no attribute 'x'``.
_NO_ATTRIBUTE = re.compile(
    r"^'(?P<type>[\w.]+)(?: object)?' has no attribute '(?P<name>[^']*)'")


def _undefined_error(template: str, exc: jinja2.UndefinedError) -> InvalidJobError:
    """A missing key or variable is a MissingVariableError; an attribute looked up on a
    string, number or list means the data has the wrong type there (DataTypeError)."""
    message = exc.message or str(exc)
    found = _NO_ATTRIBUTE.match(message)
    if found and found["type"] not in ("dict", "jinja2.utils.Namespace", "Namespace"):
        kind = "null" if found["type"] == "None" else f"a {found['type']}"
        return DataTypeError(
            f"Template {template!r} expects an object with {found['name']!r} but the data "
            f"has {kind} there (wrong data type, not a missing value): {message}")
    return MissingVariableError(
        f"Template {template!r} uses a variable the data does not provide: {message}")


def check_document_inputs(options: JobOptions | None, data: Mapping[str, Any],
                          templates_dir: Path,
                          check_template: Callable[[object, object], None] | None,
                          limits: DataLimits | int) -> None:
    """Submit-time checks of the document options against the data and the templates (the
    worker checks again): invoice data with a missing or wrong field or wrong totals
    (``EInvoiceDataError``; the XML schema is checked by the worker), an
    attachment file or merge template that is not in the templates directory, merge data
    over the limits. ``check_template(name, css_file)`` checks a merge template where the
    templates are (the render service compiles it; the API only looks for the file); None
    checks the names only.
    """
    if options is None or not has_document_options(options):
        return
    if options.einvoice is not None:
        # The fields and totals only, in proportion to the data: building the XML and
        # checking it against the schema is the worker's (within its limits), not the
        # submitting process's (an API serves every tenant's submits).
        from pdftasks.documents.invoice import read_invoice

        read_invoice(data, options.einvoice.profile)
    present = templates_dir.is_dir()
    for i, att in enumerate(options.attachments or ()):
        if att.path is not None:
            where = f"options.attachments[{i}].path"
            path = resolve_inside(templates_dir, att.path, where)
            if present and not path.is_file():
                raise InvalidOptionsError(f"{where}: {att.path!r} is not a file in the "
                                          "templates directory")
    for i, part in enumerate(options.merge or ()):
        if part.template is None:
            continue
        if present and check_template is not None:
            check_template(part.template, part.css_file)
        else:
            resolve_inside(templates_dir, part.template, f"options.merge[{i}].template")
        if part.data is not None:
            check_data(part.data, limits)


@dataclass(frozen=True)
class PDFServiceConfig:
    """Where templates come from and where PDFs go (the guide's ``PDFServiceConfig``).

    Attributes:
        templates_dir: Templates, their CSS and assets (images, fonts). Nothing outside it
            is read.
        output_dir: Generated PDFs. Nothing outside it is written.
        allowed_url_prefixes: http(s) URL prefixes a template may fetch; empty = no network.
        max_data_bytes: Largest JSON data of one job, in bytes.
        data_limits: Depth, key, list and string limits of job data (None: the defaults,
            with ``max_data_bytes``).
        storage: ``s3://bucket/prefix`` to write PDFs to S3 instead of ``output_dir``
            (region and endpoint from ``settings``, which S3 needs); ``""`` = the output
            directory; None (default) = ``settings.storage``, or the output directory
            without ``settings``.
        settings: The ``Settings`` these values came from (``from_settings`` keeps them):
            the region and endpoint of an S3 storage. Nothing here reads the environment.
    """

    templates_dir: str | os.PathLike[str] = "templates"
    output_dir: str | os.PathLike[str] = "output"
    allowed_url_prefixes: tuple[str, ...] = ()
    max_data_bytes: int = MAX_DATA_BYTES
    storage: str | None = None
    data_limits: DataLimits | None = None
    settings: Settings | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> PDFServiceConfig:
        """The config of ``settings``. Without them, of the environment (``PDFTASKS_*``):
        a user calling this with nothing is an entry point; pdftasks' own code passes
        its settings."""
        s = settings or get_settings()
        return cls(
            templates_dir=s.templates_dir,
            output_dir=s.output_dir,
            allowed_url_prefixes=s.url_prefixes,
            max_data_bytes=s.max_data_bytes,
            storage=s.storage,
            data_limits=DataLimits.from_settings(s),
            settings=s,
        )

    from_env = from_settings


@dataclass
class RenderResult:
    """What one render produced. ``as_dict()`` is the task's return value."""

    path: str
    pages: int
    bytes: int
    duration_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict, which deep-copies (about 20 us a job in a worker) a dict
        # that is encoded and dropped.
        return {"path": self.path, "pages": self.pages, "bytes": self.bytes,
                "duration_ms": self.duration_ms, **self.extra}


class PDFService:
    """Renders templates to PDF files (the guide's ``PDFService``), safely.

    Args:
        config: Directories and limits; default ``PDFServiceConfig.from_settings()`` (the
            environment: ``PDFService()`` with nothing is, like ``PDFQueueManager()``, an
            entry point; pdftasks itself always passes a config).
        cache_stylesheets: Keep the templates' parsed ``<link>`` stylesheets across
            documents (``render.fetcher._StylesheetCache``). It needs a process-wide hook
            (``weasyprint.css.CSS`` is replaced), installed when this service first lays
            out a document; so it is off by default and on in the worker's render service
            (``pdftasks.worker.tasks.render_service``), where it saves ~8 ms a document.
    """

    #: Exceptions that must pass through untouched (Celery's soft time limit, set by the
    #: worker), so the caller can tell a timeout from a broken template.
    interrupts: tuple[type[Exception], ...] = ()

    def _passthrough(self) -> tuple[type[Exception], ...]:
        """Exceptions that leave the renderer unchanged: pdftasks' own and ``interrupts``."""
        return (PdfTasksError, *self.interrupts)

    def __init__(self, config: PDFServiceConfig | None = None, *,
                 cache_stylesheets: bool = False) -> None:
        from weasyprint.text.fonts import FontConfiguration

        self.config = config or PDFServiceConfig.from_settings()
        self.templates_dir = Path(self.config.templates_dir).expanduser().resolve()
        settings = self.config.settings
        target = self.config.storage if self.config.storage is not None \
            else (settings.storage if settings is not None else "")
        self.storage = make_storage(target or self.config.output_dir, settings)
        self.output_dir = Path(self.config.output_dir).expanduser().resolve()
        self.env = LimitedSandbox(
            loader=ConfinedLoader(self.templates_dir),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            auto_reload=True,
            cache_size=400,
        )
        self.font_config = FontConfiguration()
        self._fetcher = _make_fetcher((self.templates_dir,),
                                      tuple(self.config.allowed_url_prefixes))
        self._css_cache: dict[tuple[Path, float], Any] = {}
        self._image_cache: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.cache_stylesheets = cache_stylesheets
        #: Whether the stylesheet cache was set up (or is not wanted): done on first layout.
        self._stylesheets_ready = not cache_stylesheets

    def _setup_stylesheet_cache(self) -> None:
        with self._lock:
            if not self._stylesheets_ready:
                enable_stylesheet_cache(self._fetcher)
                quiet_progress_log()
                self._stylesheets_ready = True

    # Checks usable at submit time, without rendering.

    def check_job(self, template: object, output_filename: object,
                  css_file: object = None, data: object = None) -> None:
        """Raise a typed ``InvalidJobError`` if the job cannot possibly succeed."""
        self.check_template(template, css_file)
        check_output_filename(output_filename)
        if data is not None:
            check_data(data, self.config.data_limits or self.config.max_data_bytes)

    def check_options(self, options: JobOptions | None, data: Mapping[str, Any]) -> None:
        """Raise a typed ``InvalidJobError`` if the document options cannot succeed with
        this data and these templates (``check_document_inputs``; merge templates are
        compiled)."""
        check_document_inputs(options, data, self.templates_dir, self.check_template,
                              self.config.data_limits or self.config.max_data_bytes)

    def check_template(self, template: object, css_file: object = None) -> None:
        """The template exists inside the templates directory and compiles; so does the CSS."""
        path = resolve_inside(self.templates_dir, template, "template")
        if not path.is_file():
            raise TemplateNotFoundError(
                f"Template not found: {template!r} in the templates directory")
        self._compile(str(template))
        if css_file is not None:
            self._css_path(css_file)

    def _css_path(self, css_file: object) -> Path:
        path = resolve_inside(self.templates_dir, css_file, "css_file")
        if not path.is_file():
            raise TemplateNotFoundError(
                f"CSS file not found: {css_file!r} in the templates directory")
        return path

    # Rendering.

    @contextlib.contextmanager
    def _template_errors(self, template: str) -> Iterator[None]:
        """Turn Jinja's exceptions into pdftasks' typed, permanent errors."""
        try:
            yield
        except jinja2.TemplateNotFound as exc:
            raise TemplateNotFoundError(
                f"Template not found: {exc.name!r} in the templates directory") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateSyntaxError(
                f"Template syntax error in {exc.name or template!r} line {exc.lineno}: "
                f"{exc.message}") from exc
        except jinja2.UndefinedError as exc:
            raise _undefined_error(template, exc) from exc
        except SecurityError as exc:
            raise TemplateSecurityError(f"Template {template!r} is unsafe: {exc}") from exc
        except MemoryError as exc:
            raise RenderMemoryError(f"Template {template!r} exceeded the memory limit") from exc
        except self._passthrough():
            raise
        except TypeError as exc:
            # Jinja runs the data through Python operators: `'abc' * 1.5`, iterating a
            # number, calling a string. The template compiled, so the data's types are wrong.
            raise DataTypeError(
                f"Template {template!r} cannot use the data: a value has the wrong type "
                f"({exc})") from exc
        except Exception as exc:
            raise RenderError(
                f"Template {template!r} failed: {type(exc).__name__}: {exc}") from exc

    def _compile(self, template: str) -> jinja2.Template:
        """The compiled template (cached by Jinja until the file changes)."""
        with self._template_errors(template):
            return self.env.get_template(template)

    def render_html(self, template: str, data: Mapping[str, Any],
                    context: Mapping[str, Any] | None = None) -> str:
        """Render the Jinja template to HTML (sandboxed, autoescaped, strict undefined).
        ``context``: variables set by pdftasks on top of the data (a split job's ``part``)."""
        resolve_inside(self.templates_dir, template, "template")
        compiled = self._compile(template)
        with self._template_errors(template):
            return compiled.render(**data, **context) if context else compiled.render(**data)

    def _stylesheet(self, css_file: str) -> Any:
        from weasyprint import CSS

        path = self._css_path(css_file)
        key = (path, path.stat().st_mtime)
        sheet = self._css_cache.get(key)
        if sheet is None:
            sheet = CSS(filename=str(path), url_fetcher=self._fetcher,
                        font_config=self.font_config)
            self._css_cache = {k: v for k, v in self._css_cache.items() if k[0] != path}
            self._css_cache[key] = sheet
        return sheet

    def html_to_pdf(self, html: str, css_file: str | None = None, *,
                    write_options: Mapping[str, Any] | None = None,
                    metadata: DocumentMetadata | None = None) -> tuple[bytes, int]:
        """Lay out ``html`` (base URL = templates dir) and return (pdf bytes, page count).
        ``write_options`` go to WeasyPrint's ``write_pdf`` (``pdf_variant``); ``metadata``
        overrides the template's title, author … (the ``metadata`` job option)."""
        from weasyprint import HTML

        if not self._stylesheets_ready:
            self._setup_stylesheet_cache()
        if self.cache_stylesheets:
            skip_unwanted_progress()
        stylesheets = [self._stylesheet(css_file)] if css_file else []
        try:
            document = HTML(string=html, base_url=self.templates_dir.as_uri() + "/",
                            url_fetcher=self._fetcher).render(
                stylesheets=stylesheets, font_config=self.font_config,
                cache=self._image_cache)
            self._local_links(document)
            if metadata is not None:
                set_metadata(document, metadata)
            pdf = document.write_pdf(**(write_options or {}))
        except self._fetcher.denied as exc:
            raise UnsafeResourceError(str(exc)) from exc
        except MemoryError as exc:
            raise RenderMemoryError("The document exceeded the render memory limit") from exc
        except self._passthrough():
            raise
        except Exception as exc:
            raise RenderError(f"WeasyPrint failed: {type(exc).__name__}: {exc}") from exc
        if len(self._image_cache) > 256:
            self._image_cache.clear()
        return pdf, len(document.pages)

    def _local_links(self, document: Any) -> None:
        """Links to local files leave no server path in the PDF: one to a file inside the
        templates directory becomes relative, any other ``file:`` link is dropped."""
        base = self.templates_dir.as_uri() + "/"
        for page in document.pages:
            links = []
            for link in page.links:
                kind, target = link[0], link[1]
                if kind == "external" and str(target).lower().startswith("file:"):
                    if not str(target).startswith(base):
                        continue
                    link = (kind, str(target)[len(base):], *link[2:])
                links.append(link)
            page.links[:] = links

    def render_pdf(self, template: str, data: Mapping[str, Any],
                   css_file: str | None = None,
                   context: Mapping[str, Any] | None = None) -> tuple[bytes, int]:
        """Template + data (+ ``context``, as in ``render_html``) -> (pdf bytes, page count),
        without writing anything."""
        if css_file is not None:
            self._css_path(css_file)
        return self.html_to_pdf(self.render_html(template, data, context), css_file)

    def generate_pdf(self, template: str, data: Mapping[str, Any], output_filename: str,
                     css_file: str | None = None, key: str | None = None,
                     options: JobOptions | None = None,
                     context: Mapping[str, Any] | None = None,
                     job_pdf: Callable[[str], bytes] | None = None) -> RenderResult:
        """Render and write the PDF atomically to the storage (the output directory, or S3
        with ``storage``) as ``key`` (default: ``output_filename`` at the top of the storage;
        jobs pass their server-chosen key); ``path`` is the file's path or ``s3://`` URI.
        ``options``: the job's document options (``pdftasks.options``), applied to the
        rendered PDF. ``context``: variables set by pdftasks on top of the data (a split
        job's ``part``). ``job_pdf``: the bytes of an earlier completed job of the same
        tenant, for ``merge`` parts naming a ``job_id`` (the worker gives it)."""
        started = time.perf_counter()
        self.check_job(template, output_filename, css_file, data)
        if options is not None and has_document_options(options):
            pdf, pages = self.render_document(template, data, css_file, options, context,
                                              job_pdf=job_pdf)
        else:
            pdf, pages = self.render_pdf(template, data, css_file, context)
        path = self.storage.write(key or output_filename, pdf)
        return RenderResult(path=str(path), pages=pages, bytes=len(pdf),
                            duration_ms=round((time.perf_counter() - started) * 1000, 1))

    def render_document(self, template: str, data: Mapping[str, Any], css_file: str | None,
                        options: JobOptions, context: Mapping[str, Any] | None = None, *,
                        job_pdf: Callable[[str], bytes] | None = None) -> tuple[bytes, int]:
        """Render with the document options (``pdftasks.documents.pipeline``: metadata,
        variant, merge, watermark, attachments, e-invoice, encryption, signature) ->
        (pdf bytes, page count)."""
        from pdftasks.documents import pipeline

        invoice_xml = pipeline.prepare(options, data)  # bad invoice data fails before layout
        if css_file is not None:
            self._css_path(css_file)
        pdf, pages = self.html_to_pdf(self.render_html(template, data, context), css_file,
                                      write_options=pipeline.write_options(options),
                                      metadata=options.metadata)
        return self.finish_document(pdf, pages, options, data, job_pdf=job_pdf,
                                    invoice_xml=invoice_xml)

    def finish_document(self, pdf: bytes, pages: int, options: JobOptions,
                        data: Mapping[str, Any], *,
                        job_pdf: Callable[[str], bytes] | None = None,
                        invoice_xml: bytes | None = None) -> tuple[bytes, int]:
        """Apply the document options after the layout to ``pdf`` (rendered here, or a split
        job's merged parts, ``pdftasks.worker.split``) -> (pdf bytes, page count).
        ``invoice_xml``: the e-invoice already built from ``data``, if it was."""
        from pdftasks.documents import pipeline

        if not has_document_options(options):
            return pdf, pages
        write_options = pipeline.write_options(options)

        def render_part(part: str, part_data: Mapping[str, Any], part_css: str | None) -> bytes:
            self.check_template(part, part_css)
            check_data(part_data, self.config.data_limits or self.config.max_data_bytes)
            return self.html_to_pdf(self.render_html(part, part_data), part_css,
                                    write_options=write_options)[0]

        ctx = pipeline.DocumentContext(
            render_part=render_part,
            resolve=lambda name, kind: resolve_inside(self.templates_dir, name, kind),
            job_pdf=job_pdf, signing=SigningProfile.from_settings(self.config.settings),
            font_config=self.font_config)
        try:
            return pipeline.finish(pdf, pages, options, data, ctx,
                                   pipeline.prepare(options, data) if invoice_xml is None
                                   else invoice_xml)
        except self._passthrough():
            raise
        except Exception as exc:
            raise RenderError(f"Applying the document options failed: "
                              f"{type(exc).__name__}: {exc}") from exc

    def cleanup_old_files(self, days: float) -> int:
        """Delete PDFs older than ``days`` from the storage; return how many."""
        return len(self.storage.delete_older_than(time.time() - days * 86400))

    def warm_up(self, freeze_gc: bool = True) -> float:
        """Render a tiny document so fonts and layout code are loaded; return ms taken.

        With ``freeze_gc`` (the default; worker processes call this once at start) the
        objects alive afterwards (modules, WeasyPrint's user-agent stylesheets, fonts: about
        100,000 in a worker) move to the garbage collector's permanent generation
        (``gc.freeze()``). They live as long as the process, but without this every full
        collection walks them again: about every 11th one-page invoice paid a ~65 ms
        collection instead of ~14 ms (``benchmarks/render_cost.py``).
        """
        started = time.perf_counter()
        self.html_to_pdf(_WARMUP_HTML)
        if freeze_gc:
            gc.collect()
            gc.freeze()
        return (time.perf_counter() - started) * 1000
