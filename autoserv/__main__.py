"""``python -m autoserv`` is the ``autoserv`` command."""

from autoserv.cli import main

raise SystemExit(main())
