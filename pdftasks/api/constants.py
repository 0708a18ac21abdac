"""Limits and fixed values of the HTTP API."""

#: Path prefix of the job routes.
BASE_PATH = "/api/pdf"
#: Most jobs in one batch request.
MAX_BATCH = 500
#: Most jobs one list request returns.
MAX_LIST = 200
#: Largest ``metadata`` object of one job, in bytes of JSON.
MAX_METADATA_BYTES = 64 * 1024
#: Seconds a client is asked to wait when the broker is unreachable.
BROKER_RETRY_AFTER_S = 5
#: How long an Idempotency-Key stays reserved by a request that has not finished, in s.
IDEMPOTENCY_CLAIM_S = 60
#: Requests up to this size are checked on the event loop, larger ones in a thread (bytes).
INLINE_BYTES = 64 * 1024
#: Timeout of the health check's broker ping, in seconds.
HEALTH_TIMEOUT_S = 1.0
#: JSON request bodies may nest this many levels deeper than job data may
#: (``PDFTASKS_MAX_DATA_DEPTH``): a batch's data sits 3 levels down. Deeper bodies are refused
#: before they are parsed, so no parser or serializer ever recurses deeply on client input.
BODY_DEPTH_MARGIN = 8
