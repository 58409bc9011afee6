"""``python -m autoserv.guest_image``: a shim that only runs :func:`autoserv.lab.guest_image.main`.

The guest image lives in the package :mod:`autoserv.lab.guest_image`; this name
is kept so the documented command keeps working.  Importing this module imports nothing.
"""

if __name__ == "__main__":
    from autoserv.lab.guest_image.cli import main

    raise SystemExit(main())
