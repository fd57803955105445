"""``python -m tq_cli``: the same as the ``tq`` command."""

from tq_cli.main import main

main()
