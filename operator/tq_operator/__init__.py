"""tq_operator."""
