"""tq_services."""
