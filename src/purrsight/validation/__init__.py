"""The pieces of ``purrsight validate`` (the guide's 9 checks); the entry point and the
check list are in :mod:`purrsight.validate`."""
