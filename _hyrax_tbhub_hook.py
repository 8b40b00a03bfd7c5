"""Makes ``import hyrax.tensorboardx_logger`` give ``hyrax_tbhub.tensorboardx_logger``.

A top-level module, not part of the package, on purpose: ``hyrax_tbhub.pth`` imports it at
interpreter start when ``HYRAX_TBHUB`` is set, and importing anything inside ``hyrax_tbhub``
would run the package's ``__init__`` (its hub machinery, ~0.1 s) in every Python process of the
job, including those that never import hyrax. This module imports only ``sys`` and
``importlib.machinery`` (both already loaded at start); hyrax_tbhub itself is imported when, and
only if, something imports ``hyrax.tensorboardx_logger``.

``hyrax_tbhub.use_with_hyrax()`` installs the same finder in a running process.
"""

import os
import sys
from importlib.machinery import ModuleSpec

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at start; only the type checker needs it
    from collections.abc import Mapping, Sequence
    from types import ModuleType

ENV = "HYRAX_TBHUB"
TARGET = "hyrax.tensorboardx_logger"
OURS = "hyrax_tbhub.tensorboardx_logger"


def enabled(environ: "Mapping[str, str]" = os.environ) -> bool:
    """Whether the environment switches hyrax over (the variable set, and not to "0" or "")."""
    return environ.get(ENV, "") not in ("", "0")


class _Loader:
    """Hands back hyrax_tbhub's module, already loaded, instead of executing hyrax's file."""

    def __init__(self) -> None:
        self._own_spec: ModuleSpec | None = None

    def create_module(self, spec: ModuleSpec) -> "ModuleType":
        __import__(OURS)
        module = sys.modules[OURS]
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module: "ModuleType") -> None:
        # The import system stamped the requested name's spec on the module; its own spec (its
        # real name and file) is what reload() and pickling by reference need.
        if self._own_spec is not None:
            module.__spec__ = self._own_spec


class HyraxFinder:
    """A meta-path finder that answers for ``hyrax.tensorboardx_logger`` only."""

    def find_spec(
        self, fullname: str, path: "Sequence[str] | None" = None, target: "ModuleType | None" = None
    ) -> "ModuleSpec | None":
        if fullname != TARGET:
            return None
        return ModuleSpec(TARGET, _Loader(), origin="hyrax_tbhub")  # type: ignore[arg-type]

    def invalidate_caches(self) -> None:
        pass


FINDER = HyraxFinder()


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, HyraxFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, FINDER)


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, HyraxFinder)]


if enabled():
    try:
        install()
    except Exception:  # pragma: no cover - interpreter start must never fail because of us
        pass
