"""The ``tq`` command line: the composition root that wires the engine (``tq``), the families and
the admin (``tq_services``) and the operator (``tq_operator``) together. Nothing imports it."""
