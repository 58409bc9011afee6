"""``python -m autoserv.demo``: a shim that only runs :func:`autoserv.lab.demo.main`.

The demo lives in :mod:`autoserv.lab.demo`; this name is kept so the documented
command keeps working.  Importing this module imports nothing.
"""

if __name__ == "__main__":
    from autoserv.lab.demo import main

    raise SystemExit(main())
