"""The store: every SQL statement of the service, one module per subject.

Every function takes an open connection; the caller's `with db.connection()` block is the
unit of work (commit at the end, roll back on error). Writes are idempotent upserts,
since any cron call may be retried or overlap another.
"""

from models.activities import *  # noqa: F401,F403
from models.base import *  # noqa: F401,F403
from models.budget import *  # noqa: F401,F403
from models.discovery import *  # noqa: F401,F403
from models.duplicates import *  # noqa: F401,F403
from models.enrichment import *  # noqa: F401,F403
from models.migrations import *  # noqa: F401,F403
from models.planning import *  # noqa: F401,F403
from models.riders import *  # noqa: F401,F403
from models.runs import *  # noqa: F401,F403
from models.status import *  # noqa: F401,F403
from models.sync import *  # noqa: F401,F403
from models.tokens import *  # noqa: F401,F403
from models.weather import *  # noqa: F401,F403
from models.webhooks import *  # noqa: F401,F403
