"""Helpers and child-process functions of the fault suite (tests/test_faults_*.py), one module per fault.

Everything a child runs lives in these modules, so spawn and forkserver children import it by
name (``faults.kill.victim``): tests/ is on ``sys.path`` (pytest's rootdir import mode and
tests/conftest.py), and a child inherits its parent's path. :mod:`faults.common` holds the
plumbing every test shares; :mod:`faults.procfs` and :mod:`faults.timing` what measurements need.
"""
