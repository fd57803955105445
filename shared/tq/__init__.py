"""tq - Teknav Queues: the engine."""

from tq.cancelsafe import patch_redis

patch_redis()  # before any client is used: a cancelled task stops even mid-call (tq.cancelsafe)
