"""Webhooks: signed POSTs to a job's ``callback_url`` on completion or final failure.

Delivered from the worker side: an event hook of the app
(``pdftasks.worker.tasks.event_hooks``) sees each
published transition; for ``completed`` and ``failed`` (final, not ``retrying``) of a job
whose metadata has a ``callback_url`` it queues ``pdftasks.deliver_webhook`` on the
``{namespace}.high`` queue, which every ``pdftasks worker`` consumes. That task POSTs the job
document as JSON, signed with HMAC-SHA256, and is retried with exponential backoff
(``PDFTASKS_RETRY_BACKOFF_S`` doubling up to ``PDFTASKS_RETRY_BACKOFF_MAX_S``, with
``PDFTASKS_RETRY_JITTER``) up to ``PDFTASKS_WEBHOOK_MAX_RETRIES`` times.

Signature: ``X-PDFTasks-Signature: sha256=<hex>`` where ``hex = HMAC-SHA256(key,
f"{timestamp}.{body}")`` and ``timestamp`` is the ``X-PDFTasks-Timestamp`` header (Unix
seconds). ``key`` is the tenant's webhook secret, :func:`tenant_secret` (derived from
``PDFTASKS_WEBHOOK_SECRET``, so no tenant can sign for another), or
``PDFTASKS_WEBHOOK_SECRET`` itself for jobs submitted without a tenant.

Server-side request forgery: a callback URL must be http(s) and every address its host
resolves to must be public; private, loopback, link-local (169.254.169.254), reserved and
multicast addresses are refused unless ``PDFTASKS_WEBHOOK_ALLOWED_HOSTS`` lists the host
name, the address or a network containing it. The check runs at submit time and again at
delivery, and the connection goes to the address that was checked (no DNS rebinding in
between). Redirects are never followed.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pdftasks.errors import InvalidJobError, PermanentError, TransientError
from pdftasks.models import TENANT_KEY

log = logging.getLogger(__name__)

#: Name of the delivery task.
DELIVER_WEBHOOK = "pdftasks.deliver_webhook"
#: Priority whose queue carries webhook deliveries (consumed by every ``pdftasks worker``).
WEBHOOK_PRIORITY = "high"
#: Connect and read timeout of one delivery attempt, in seconds.
TIMEOUT_S = 10.0
#: How long resolving a callback host may take, in seconds.
RESOLVE_TIMEOUT_S = 2.0
#: Longest accepted callback URL, in characters.
MAX_URL_LENGTH = 2048
#: How old a signed timestamp a receiver should accept, in seconds (see :func:`verify`).
TOLERANCE_S = 300

#: Metadata keys the HTTP API sets; clients cannot set them through the API.
CALLBACK_KEY = "callback_url"
RESERVED_METADATA = (TENANT_KEY, CALLBACK_KEY)

SIGNATURE_HEADER = "X-PDFTasks-Signature"
TIMESTAMP_HEADER = "X-PDFTasks-Timestamp"
EVENT_HEADER = "X-PDFTasks-Event"
DELIVERY_HEADER = "X-PDFTasks-Delivery"

#: Statuses after which trying the same delivery again can help.
_RETRY_STATUSES = frozenset({408, 425, 429})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeCallbackError(InvalidJobError):
    """The callback URL is malformed or points at an address webhooks may not reach."""


class WebhookDeliveryError(TransientError):
    """A delivery attempt failed in a way a later attempt may not (retried)."""


class WebhookRejectedError(PermanentError):
    """The receiver answered with a status that retrying will not change (not retried)."""


# Callback URLs.


class AllowList:
    """``PDFTASKS_WEBHOOK_ALLOWED_HOSTS``: host names, addresses and networks (CIDR)."""

    def __init__(self, spec: str = "") -> None:
        self.hosts: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            try:
                self.networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                self.hosts.add(item.lower().rstrip("."))

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def address_allowed(self, address: IPAddress) -> bool:
        return any(address in net for net in self.networks if net.version == address.version)


def _public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (address.is_multicast or address.is_unspecified
                                      or address.is_reserved)


def _resolve(host: str, port: int, timeout: float) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        infos = pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)\
            .result(timeout=timeout)
    except concurrent.futures.TimeoutError as exc:
        raise UnsafeCallbackError(
            f"callback_url host {host!r} did not resolve within {timeout:g} s") from exc
    except (OSError, UnicodeError) as exc:
        raise UnsafeCallbackError(f"callback_url host {host!r} does not resolve: {exc}") from exc
    finally:
        pool.shutdown(wait=False)
    out: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in out:
            out.append(address)
    return out


def check_callback_url(url: object, allowed_hosts: str = "",
                       resolve_timeout: float = RESOLVE_TIMEOUT_S) -> list[IPAddress]:
    """Check that webhooks may POST to ``url``; return the addresses its host resolves to.

    Raises:
        UnsafeCallbackError: not an http(s) URL with a host, credentials in it, a host that
            does not resolve, or any resolved address that is private, loopback, link-local,
            reserved or multicast and not allowed by ``allowed_hosts``.
    """
    if not isinstance(url, str) or not url:
        raise UnsafeCallbackError("callback_url must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeCallbackError(f"callback_url is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise UnsafeCallbackError("callback_url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        host = parts.hostname
    except ValueError as exc:
        raise UnsafeCallbackError(f"callback_url {url!r} is not a valid URL: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise UnsafeCallbackError(f"callback_url {url!r} must be an http:// or https:// URL")
    if not host:
        raise UnsafeCallbackError(f"callback_url {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeCallbackError("callback_url must not contain credentials (user:password@)")
    allow = AllowList(allowed_hosts)
    addresses = _resolve(host, port, resolve_timeout)
    if allow.host_allowed(host):
        return addresses
    for address in addresses:
        if not _public(address) and not allow.address_allowed(address):
            raise UnsafeCallbackError(
                f"callback_url {url!r} resolves to {address}, a private, loopback, "
                "link-local or reserved address: refused (an operator can allow it with "
                "PDFTASKS_WEBHOOK_ALLOWED_HOSTS)")
    return addresses


# Signatures.


def tenant_secret(secret: str, tenant: str | None) -> str:
    """The webhook signing secret of ``tenant`` (``secret`` itself for jobs without one).

    ``HMAC-SHA256(secret, "pdftasks-webhook:" + tenant)`` as hex: each tenant verifies with
    its own secret and cannot produce another tenant's signatures.
    """
    if not tenant:
        return secret
    return hmac.new(secret.encode(), f"pdftasks-webhook:{tenant}".encode(),
                    hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """``sha256=<hex>`` of ``HMAC-SHA256(secret, f"{timestamp}.{body}")``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str | None, body: bytes, signature: str | None,
           tolerance_s: float = TOLERANCE_S, now: float | None = None) -> bool:
    """Receiver side: True if ``signature`` is right for ``body`` and ``timestamp`` is recent."""
    if not timestamp or not signature:
        return False
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


# The job as clients see it (HTTP API responses and webhook payloads).


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def public_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The job's metadata without what pdftasks keeps there for itself."""
    return {k: v for k, v in metadata.items() if k not in RESERVED_METADATA}


def job_document(job: Any, base_path: str = "/api/pdf") -> dict[str, Any]:
    """The job's status document (the guide's shape, plus numbers for programs)."""
    duration = job.duration_s
    status = job.status.value
    doc: dict[str, Any] = {
        "job_id": job.job_id, "status": status, "priority": job.priority.label,
        "template": job.template, "filename": job.output_filename,
        "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "completed_at": _iso(job.completed_at),
        "duration": None if duration is None else f"{duration:.2f}s",
        "duration_s": None if duration is None else round(duration, 3),
        "pages": job.pages, "error": job.error,
        "retries": f"{job.retry_count}/{job.max_retries}",
        "retry_count": job.retry_count, "max_retries": job.max_retries,
        "metadata": public_metadata(job.metadata),
        "options": dict(getattr(job, "options", None) or {}),
        "download_url": f"{base_path}/{job.job_id}/download" if status == "completed" else None,
    }
    return doc


# Delivery.


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address, with SNI and certificate checks for the URL's host."""

    def __init__(self, address: str, port: int, server_hostname: str, timeout: float) -> None:
        self.tls = ssl.create_default_context()  # our own reference: not http.client's
        super().__init__(address, port, timeout=timeout, context=self.tls)
        self._server_hostname = server_hostname

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self._server_hostname)


def post(url: str, body: bytes, headers: Mapping[str, str], allowed_hosts: str = "",
         timeout: float = TIMEOUT_S) -> int:
    """POST ``body`` to ``url`` once, after checking it again; return the response status.

    The connection goes to an address that passed the check (no second DNS lookup);
    redirects are not followed.

    Raises:
        UnsafeCallbackError: the URL is (now) refused.
        OSError, http.client.HTTPException: the connection failed.
    """
    addresses = check_callback_url(url, allowed_hosts)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    address = str(addresses[0])
    if parts.scheme.lower() == "https":
        conn: http.client.HTTPConnection = _PinnedHTTPSConnection(address, port, host, timeout)
    else:
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
    host_header = f"[{host}]" if ":" in host else host
    if parts.port:
        host_header += f":{parts.port}"
    try:
        conn.request("POST", path, body=body, headers={"Host": host_header, **headers})
        response = conn.getresponse()
        response.read(64 * 1024)
        return response.status
    finally:
        conn.close()


def delivery_headers(secret: str, event: str, delivery_id: str, body: bytes,
                     timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/json",
        "User-Agent": "pdftasks-webhook/1",
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: ts,
        SIGNATURE_HEADER: sign(secret, ts, body),
    }


def _deliver(task: Any, url: str, payload: dict[str, Any], tenant: str | None = None) -> int:
    """Celery task body: one signed delivery attempt; raise to retry."""
    from pdftasks.worker.tasks import app_settings

    s = app_settings(task.app)
    if not s.webhook_secret:
        log.error("webhook for job %s not sent: PDFTASKS_WEBHOOK_SECRET is not set on this "
                  "worker", payload.get("job", {}).get("job_id"))
        return 0
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    root = s.webhook_secret.get_secret_value()
    headers = delivery_headers(tenant_secret(root, tenant), payload["event"],
                               payload["delivery_id"], body)
    job_id = payload.get("job", {}).get("job_id")
    try:
        status = post(url, body, headers, ",".join(s.webhook_allowed_hosts))
    except UnsafeCallbackError as exc:
        log.warning("webhook for job %s not sent: %s", job_id, exc)
        return 0
    except (OSError, http.client.HTTPException) as exc:
        raise WebhookDeliveryError(
            f"webhook for job {job_id} to {url}: {type(exc).__name__}: {exc}") from exc
    if 200 <= status < 300:
        log.info("webhook %s for job %s delivered (%d)", payload["event"], job_id, status)
        return status
    if status >= 500 or status in _RETRY_STATUSES:
        raise WebhookDeliveryError(f"webhook for job {job_id} to {url}: HTTP {status}")
    raise WebhookRejectedError(
        f"webhook for job {job_id} to {url}: HTTP {status}; not retried (only 5xx, 408, "
        "425, 429 and connection errors are)")


def payload_for(job: Any, event: str) -> dict[str, Any]:
    """The webhook body for ``event`` (completed or failed) of ``job``."""
    return {
        "event": f"job.{event}",
        "delivery_id": str(uuid.uuid4()),
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
        "job": job_document(job),
    }


def on_event(app: Any, event: str, job_id: str, error: str | None) -> None:
    """Event hook (worker side): queue a delivery for final outcomes of jobs with a callback."""
    if event not in ("completed", "failed"):
        return
    from pdftasks.celery_app import queue_name
    from pdftasks.worker.tasks import app_settings, job_store

    job = job_store(app).get(job_id)
    url = job.metadata.get(CALLBACK_KEY) if job is not None else None
    if job is None or not url:
        return
    s = app_settings(app)
    app.tasks[DELIVER_WEBHOOK].apply_async(
        args=(url, payload_for(job, event), job.metadata.get(TENANT_KEY)),
        queue=queue_name(WEBHOOK_PRIORITY, s.queue_namespace))


def install(app: Any) -> None:
    """Register webhook delivery on ``app`` (task and event hook)."""
    from pdftasks.worker.tasks import app_settings, event_hooks

    s = app_settings(app)
    app.task(
        _deliver,
        bind=True,
        name=DELIVER_WEBHOOK,
        autoretry_for=(WebhookDeliveryError,),
        retry_backoff=s.retry_backoff_s,
        retry_backoff_max=s.retry_backoff_max_s,
        retry_jitter=s.retry_jitter,
        max_retries=s.webhook_max_retries,
        ignore_result=True,
        shared=False,  # each app its own: never registered on a host's app
    )
    if on_event not in event_hooks(app):
        event_hooks(app).append(on_event)
