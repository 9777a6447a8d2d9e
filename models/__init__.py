"""The store: every SQL statement of the service, one module per subject.

Every function takes an open connection; the caller's `with db.connection()` block is the
unit of work (commit at the end, roll back on error). Writes are idempotent upserts,
since any cron call may be retried or overlap another. Callers name the subject:
`models.sync.claim_riders_for_sync(conn, ...)`.
"""

from models import (  # noqa: F401  (imported so that `import models` reaches every subject)
    activities,
    alerts,
    budget,
    discovery,
    duplicates,
    enrichment,
    migrations,
    planning,
    progress,
    riders,
    runs,
    sharing,
    status,
    sync,
    tokens,
    weather,
    webhooks,
)
from models.base import Conn

__all__ = ["Conn"]
