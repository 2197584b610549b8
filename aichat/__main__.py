"""``python -m aichat`` is the ``aichat`` command."""

from aichat.cli import main

raise SystemExit(main())
