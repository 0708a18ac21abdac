"""The quarantine of Celery, kombu and WeasyPrint internals (``pdftasks.compat``): the
installed versions are the tested ones; other versions fall back (with a warning) or are
refused; and no listed private name is used in pdftasks outside ``pdftasks/compat``."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import logging
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet

from pdftasks import compat
from pdftasks.compat import celery as compat_celery
from pdftasks.compat import kombu as compat_kombu
from pdftasks.compat import weasyprint as compat_weasyprint

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pdftasks"
MODULES = {"celery": compat_celery, "kombu": compat_kombu, "weasyprint": compat_weasyprint}
DEPENDENCIES = ("celery", "kombu", "weasyprint", "billiard", "vine")
#: Uses of listed names outside pdftasks/compat still to be routed through it: (file, name).
#: Both are outside the code this change may edit; remove an entry once its file is fixed.
PENDING: set[tuple[str, str]] = set()


@pytest.fixture(autouse=True)
def fresh_warnings() -> Any:
    compat.forget_warnings()
    yield
    compat.forget_warnings()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "pdftasks.compat" and r.levelno == logging.WARNING]


# The installed versions, pyproject.toml and constraints.txt agree.


@pytest.mark.parametrize("dist", MODULES)
def test_installed_version_is_tested(dist: str, caplog: pytest.LogCaptureFixture) -> None:
    module = MODULES[dist]
    assert importlib.metadata.version(dist) == module.VERSION
    assert compat.in_range(module.VERSION, module.TESTED), (dist, module.VERSION, module.TESTED)
    for internal in module.INTERNALS:
        assert module.supported(internal)
    assert warnings_of(caplog) == []


def test_pyproject_ranges_are_the_tested_ranges() -> None:
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ranges = {(r := Requirement(d)).name.lower(): r.specifier for d in project["dependencies"]}
    for dist, module in MODULES.items():
        assert ranges[dist] == SpecifierSet(module.TESTED), (dist, str(ranges[dist]))


def test_constraints_pin_the_installed_versions() -> None:
    lines = [line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    pins = {}
    for line in lines:
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[^=\s]+", line), f"not an exact pin: {line}"
        name, version = line.split("==")
        pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    assert "pdftasks" not in pins
    for dist, module in MODULES.items():
        assert pins[dist] == module.VERSION, dist


def test_internals_lists_every_use() -> None:
    listed = compat.internals()
    assert {internal.dist for _, _, internal in listed} == set(MODULES)
    for version, tested, internal in listed:
        assert internal.policy in (compat.FALLBACK, compat.REFUSE) and internal.names
        assert (version, tested) == (MODULES[internal.dist].VERSION, MODULES[internal.dist].TESTED)
    for module in MODULES.values():
        assert tuple(n for i in module.INTERNALS for n in i.names) == module.PRIVATE_NAMES


# The private names still exist in the installed versions (what TESTED vouches for).


def test_kombu_internals_exist() -> None:
    from kombu import transport
    from kombu.transport import SQS, virtual
    from kombu.transport import redis as kombu_redis

    assert isinstance(transport.TRANSPORT_ALIASES, dict)
    assert isinstance(transport._transport_cache, dict)
    assert "self._raw = payload" in inspect.getsource(virtual.Message.__init__)
    assert callable(kombu_redis.Channel._do_restore_message)
    assert "'BRPOP': self._brpop_read" in inspect.getsource(kombu_redis.Channel)
    assert isinstance(kombu_redis.Channel.Message, type)
    assert list(inspect.signature(kombu_redis.Channel._get_publish_topics).parameters) == [
        "self", "exchange", "routing_key"]
    assert "self._get_publish_topics(exchange, routing_key)" in inspect.getsource(
        kombu_redis.Channel._put_fanout)
    assert "if payload['data']:" in inspect.getsource(kombu_redis.Channel._receive_one)
    for name in ("_schedule_queue", "_new_queue", "_get_message_estimate", "_release_messages",
                 "_message_to_python"):
        assert callable(getattr(SQS.Channel, name)), name
    assert "self._active_queues = []" in inspect.getsource(virtual.Channel.__init__)
    assert "self._callbacks = {}" in inspect.getsource(virtual.Transport.__init__)
    assert list(inspect.signature(SQS.Channel._release_messages).parameters) == [
        "self", "queue", "qname", "messages"]
    assert list(inspect.signature(SQS.Channel._message_to_python).parameters) == [
        "self", "message", "queue_name", "q_url"]


def test_celery_internals_exist() -> None:
    from celery._state import get_current_task
    from celery.worker.request import Request

    assert Request._already_cancelled is False
    assert "self._already_cancelled = True" in inspect.getsource(Request)  # Celery's own
    assert "self._already_cancelled" in inspect.getsource(Request.on_failure)  # read there
    assert get_current_task() is None


def test_weasyprint_internals_exist() -> None:
    import weasyprint
    import weasyprint.css

    params = inspect.signature(weasyprint.CSS.__init__).parameters
    assert params.keys() >= compat_weasyprint.LINK_CSS_KWARGS
    assert "_check_mime_type=True" in inspect.getsource(weasyprint.css.find_stylesheets)
    assert issubclass(weasyprint.css.CSS, weasyprint.CSS)


def test_sqs_channel_names_do_not_shadow_kombu() -> None:
    from kombu.transport import SQS

    own = {n for n in vars(compat_kombu.SQSChannel) if not n.startswith("__")}
    assert own & set(dir(SQS.Channel)) == {"_schedule_queue"}


# Another version: fallback with a warning (or refusal).


def test_refuse_policy_raises_a_clear_error() -> None:
    internal = compat.Internal("kombu", "something risky", ("._x",), "n/a", compat.REFUSE)
    assert compat.check(internal, "5.7.0", ">=5.7,<5.8")
    with pytest.raises(compat.UnsupportedVersionError, match=r"kombu 6\.0\.0 .*kombu>=5.7,<5.8"):
        compat.check(internal, "6.0.0", ">=5.7,<5.8")


def test_fallback_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    internal = compat.Internal("kombu", "an optimisation", ("._x",), "stock behaviour")
    assert not compat.check(internal, "5.8.0", ">=5.7,<5.8")
    assert not compat.check(internal, "5.8.0", ">=5.7,<5.8")
    assert not compat.check(internal, "not a version", ">=5.7,<5.8")
    assert warnings_of(caplog) == [
        "kombu 5.8.0 is outside the versions pdftasks' an optimisation was written and tested "
        "for (kombu>=5.7,<5.8): stock behaviour",
        "kombu not a version is outside the versions pdftasks' an optimisation was written "
        "and tested for (kombu>=5.7,<5.8): stock behaviour"]


@pytest.fixture
def aliases(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    from kombu import transport

    copy = dict(transport.TRANSPORT_ALIASES, redis="kombu.transport.redis:Transport",
                rediss="kombu.transport.redis:Transport")
    monkeypatch.setattr(transport, "TRANSPORT_ALIASES", copy)
    monkeypatch.setattr(transport, "_transport_cache", {})
    return copy


def test_redis_rescue_transport_installs(aliases: dict[str, str]) -> None:
    from kombu import transport

    from pdftasks.brokers import redis as redis_transport

    redis_transport.install()
    assert aliases["redis"] == aliases["rediss"] == "pdftasks.brokers.redis:Transport"
    assert transport.get_transport_cls("redis") is redis_transport.Transport


def test_redis_rescue_transport_falls_back_to_kombu(
        aliases: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from kombu import transport
    from kombu.transport import redis as kombu_redis

    from pdftasks.brokers import redis as redis_transport

    monkeypatch.setattr(compat_kombu, "VERSION", "5.8.0")
    redis_transport.install()
    assert aliases["redis"] == "kombu.transport.redis:Transport"
    assert transport.get_transport_cls("redis") is kombu_redis.Transport
    [warning] = warnings_of(caplog)
    assert "kombu 5.8.0" in warning and "stock Redis transport" in warning


def test_sent_events_probe_falls_back_to_always(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from pdftasks.contrib.monitoring import sent_events_wanted

    class Untouchable:
        @property
        def channel(self) -> Any:
            raise AssertionError("the channel is not asked outside the tested versions")

    # On a kombu outside the tested versions, every task-sent event is sent, unprobed
    monkeypatch.setattr(compat_kombu, "VERSION", "5.8.0")
    assert sent_events_wanted(Untouchable(), "celeryev") is True
    [warning] = warnings_of(caplog)
    assert "kombu 5.8.0" in warning and "PDFTASKS_TASK_EVENTS=always" in warning


def test_sent_events_are_not_gated_on_other_brokers() -> None:
    from pdftasks.contrib.monitoring import sent_events_wanted

    # A channel of another transport (an AMQP channel has no kombu ``client``): sent
    assert sent_events_wanted(SimpleNamespace(channel=SimpleNamespace()), "celeryev") is True


def fake_redis_channel() -> Any:
    def read(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("unreadable")

    class Message:
        def __init__(self, payload: Any, **kwargs: Any) -> None:
            self.payload = payload

    connection = SimpleNamespace(driver_type="redis", connection_errors=(), channel_errors=())
    return SimpleNamespace(connection=connection, handlers={"BRPOP": read}, Message=Message)


def test_redis_guard_is_installed() -> None:
    from pdftasks.worker.guard import guard_redis_channel

    channel = fake_redis_channel()
    read, message_cls, broken = channel.handlers["BRPOP"], channel.Message, []
    assert guard_redis_channel(channel, broken.append)
    assert channel.handlers["BRPOP"] is not read and issubclass(channel.Message, message_cls)
    assert channel.handlers["BRPOP"]() is True and len(broken) == 1


def test_redis_guard_falls_back_unguarded(monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    from pdftasks.worker.guard import guard_redis_channel

    monkeypatch.setattr(compat_kombu, "VERSION", "6.0.0")
    channel = fake_redis_channel()
    read, message_cls = channel.handlers["BRPOP"], channel.Message
    assert not guard_redis_channel(channel, lambda exc: None)
    assert channel.handlers["BRPOP"] is read and channel.Message is message_cls
    [warning] = warnings_of(caplog)
    assert "kombu 6.0.0" in warning and "not guarded" in warning


@pytest.mark.parametrize("version, priority", [(compat_kombu.VERSION, True), ("5.8.1", False)])
def test_sqs_priority_polling_or_kombus_loop(version: str, priority: bool,
                                             monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    from pdftasks.brokers import sqs

    class Probe(sqs.Channel):
        transport_options = {"priority_polling": True}

    monkeypatch.setattr(compat_kombu, "VERSION", version)
    channel = Probe.__new__(Probe)
    kicked: list[bool] = []
    channel._kick = lambda: kicked.append(True)  # type: ignore[method-assign]
    channel._active_queues = []  # kombu's own step: not consuming "pdf.low", nothing to do
    assert channel.priority_polling is priority
    channel._schedule_queue("pdf.low")  # what kombu calls
    assert kicked == ([True] if priority else [])
    assert bool(warnings_of(caplog)) is not priority


def test_cancel_flag_set_or_celerys_own_cancel(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    from celery.worker.request import Request

    from pdftasks.worker.tasks import PdfRequest

    monkeypatch.setattr(Request, "cancel", lambda self, pool, signal=None, emit_retry=True: None)
    request = PdfRequest.__new__(PdfRequest)
    request.time_start = 1.0
    request.cancel(None)
    assert request._already_cancelled is True
    assert warnings_of(caplog) == []

    monkeypatch.setattr(compat_celery, "VERSION", "5.8.0")
    request = PdfRequest.__new__(PdfRequest)
    request.time_start = 1.0
    request.cancel(None)
    assert request._already_cancelled is False  # Celery's class default: stock behaviour
    [warning] = warnings_of(caplog)
    assert "celery 5.8.0" in warning and "Celery's own cancel" in warning


def test_current_task_falls_back_to_the_public_proxy(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    assert compat_celery.get_current_task() is None
    monkeypatch.setattr(compat_celery, "VERSION", "6.0.0")
    assert compat_celery.get_current_task() is None
    assert "celery.current_task" in warnings_of(caplog)[0]


def test_stylesheet_hook_installed_or_not(monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    import weasyprint
    import weasyprint.css

    from pdftasks.render import _install_stylesheet_hook

    monkeypatch.setattr(weasyprint.css, "CSS", weasyprint.CSS)
    monkeypatch.setattr(compat_weasyprint, "VERSION", "71.0")
    assert _install_stylesheet_hook() is False
    assert weasyprint.css.CSS is weasyprint.CSS
    [warning] = warnings_of(caplog)
    assert "weasyprint 71.0" in warning and "no cache" in warning

    monkeypatch.setattr(compat_weasyprint, "VERSION", importlib.metadata.version("weasyprint"))
    assert _install_stylesheet_hook() is True
    assert weasyprint.css.CSS is not weasyprint.CSS
    assert issubclass(weasyprint.css.CSS, weasyprint.CSS)


# No private name outside pdftasks/compat.


def source_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "compat" not in p.relative_to(PACKAGE).parts)


def code_tokens(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(attribute and method names, other names: identifiers, parameters, keywords, imported
    modules, string constants, ``receiver.attribute`` pairs) of the code of ``tree``;
    docstrings and comments excluded."""
    attributes: set[str] = set()
    names: set[str] = set()
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                                | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            attributes.add(node.attr)
            receiver = node.value
            if isinstance(receiver, ast.Name | ast.Attribute):
                names.add(f"{getattr(receiver, 'id', None) or receiver.attr}.{node.attr}")
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            attributes.update(item.name for item in node.body
                              if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.arg) or isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            names.add(node.value)
    return attributes, names


def uses(path: Path) -> set[str]:
    """The listed private names ``path`` uses."""
    attributes, names = code_tokens(ast.parse(path.read_text(), str(path)))
    found = set()
    for module in MODULES.values():
        for name in module.PRIVATE_NAMES:
            if name.startswith(".") and name[1:] in attributes or name in names:
                found.add(name)
    return found


def test_private_names_are_only_used_in_compat() -> None:
    found = {(str(p.relative_to(ROOT)), name) for p in source_files() for name in uses(p)}
    assert found - PENDING == set(), "use pdftasks.compat instead of these private names"


def test_the_token_scan_finds_each_kind_of_use(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Docstrings may name channel._raw and BRPOP."""\n'
        "from celery._state import get_current_task\n"
        "import weasyprint.css as css_module\n"
        "# comments too: ._do_restore_message\n"
        "class Channel(Base):\n"
        "    def _schedule_queue(self, queue): ...\n"
        "def f(message, channel):\n"
        "    channel.handlers['BRPOP'] = message._raw + self.connection._callbacks\n"
        "    return CSS(_check_mime_type=True)\n")
    assert uses(sample) == {"celery._state", "weasyprint.css", "._schedule_queue", "BRPOP",
                            "._raw", "connection._callbacks", "_check_mime_type"}
    sample.write_text("class Own:\n    def f(self):\n        return self._callbacks\n")
    assert uses(sample) == set()


def dependency_aliases(tree: ast.AST) -> dict[str, str]:
    """Names bound to dependency modules by the imports of ``tree`` (any scope)."""
    import importlib.util

    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in DEPENDENCIES:
                    aliases[alias.asname or alias.name.split(".")[0]] = \
                        alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module \
                and node.module.split(".")[0] in DEPENDENCIES:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                try:
                    found = importlib.util.find_spec(full) is not None
                except (ImportError, ValueError):
                    found = False
                if found:
                    aliases[alias.asname or alias.name] = full
    return aliases


def test_no_unlisted_private_use_of_dependencies() -> None:
    """A generic search for what the lists may lack, in pdftasks outside compat: imports of
    dependencies' private modules, underscore attributes of (and assignments to) dependency
    modules, and underscore names of dependency base classes used by subclasses (overrides,
    ``self._x``, ``super()._x``)."""
    problems = set()
    for path in source_files():
        rel = str(path.relative_to(ROOT))
        text = path.read_text()
        tree = ast.parse(text, rel)
        aliases = dependency_aliases(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module \
                    and node.module.split(".")[0] in DEPENDENCIES and "._" in node.module:
                problems.add((rel, node.module))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in aliases \
                    and (node.attr.startswith("_") and not node.attr.endswith("__")
                         or isinstance(node.ctx, ast.Store)):
                problems.add((rel, f"{aliases[node.value.id]}.{node.attr}"))
        if path.name == "__main__.py":  # runs the CLI
            continue
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
        classes = {node.name: ast.get_source_segment(text, node) for node in tree.body
                   if isinstance(node, ast.ClassDef)}
        for cls in vars(module).values():
            if not (inspect.isclass(cls) and cls.__module__ == module.__name__):
                continue
            bases = [b for b in cls.__mro__[1:] if b.__module__.split(".")[0] in DEPENDENCIES]
            if not bases:
                continue
            source = classes.get(cls.__name__)
            if source is None:
                problems.add((rel, f"{cls.__name__}: class statement not found"))
                continue
            used = set(re.findall(r"\b(?:self|cls|super\(\))\.(_[A-Za-z]\w*)", source))
            used |= set(re.findall(r"\bdef (_[A-Za-z]\w*)", source))
            for base in bases:
                try:
                    base_source = inspect.getsource(base)
                except (OSError, TypeError):
                    base_source = ""
                problems.update(
                    (rel, f".{name}") for name in used
                    if name in vars(base) or re.search(rf"\bself\.{name}\b", base_source))
    assert problems - PENDING == set(), \
        "private names of dependencies used outside pdftasks.compat: move them there"
