"""tq - Teknav Queues: the engine."""
