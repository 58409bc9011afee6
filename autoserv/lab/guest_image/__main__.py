"""``python -m autoserv.lab.guest_image`` (also ``python -m autoserv.guest_image``)."""

import sys

from autoserv.lab.guest_image.cli import main

sys.exit(main())
