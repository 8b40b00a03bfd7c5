"""Switching a running process, and every process it starts later, from hyrax's logger to ours.

hyrax's modules take the stock module's functions by name when they are imported
(``from hyrax.tensorboardx_logger import get_tensorboard_logger``), and some take a handle too
(``tensorboardx_logger = get_tensorboard_logger()``): replacing the module in ``sys.modules``
after ``import hyrax`` changes nothing they call. ``use_with_hyrax()`` therefore also rebinds
those names in every loaded module, installs the import hook (``_hyrax_tbhub_hook``) for modules
imported later, and sets ``HYRAX_TBHUB`` so that processes started afterwards (spawned and
forkserver ranks and workers, subprocesses) switch themselves at start through
``hyrax_tbhub.pth``. Forked children inherit the switched process as it is.
"""

from __future__ import annotations

import os
import site
import sys
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import _hyrax_tbhub_hook as hook

from . import tensorboardx_logger as ours
from ._util.stderr import warn

__all__ = ["ENV", "hyrax_switched_on", "stop_using_with_hyrax", "use_with_hyrax"]

ENV = hook.ENV
_PUBLIC = ("get_tensorboard_logger", "init_tensorboard_logger", "close_tensorboard_logger",
           "HyraxSummaryWriter")


@dataclass
class _Switch:
    stock: ModuleType | None  # hyrax's module as it was in sys.modules, if it was loaded
    stock_attr: Any  # hyrax.tensorboardx_logger (the package attribute) before the switch
    env_before: str | None
    # What the call found, put back as it was by the undo: HYRAX_TBHUB at start may already have
    # installed the finder and our module.
    module_before: ModuleType | None
    finder_before: bool
    rebound: list[tuple[dict[str, Any], str, Any]] = field(default_factory=list)


_LOCK = threading.Lock()
_switch: _Switch | None = None
_warned_pth = False


def hyrax_switched_on() -> bool:
    """True when ``import hyrax.tensorboardx_logger`` gives hyrax_tbhub's module in this process."""
    return sys.modules.get(hook.TARGET) is ours


def use_with_hyrax() -> None:
    """Make hyrax log through hyrax_tbhub from now on, in this process and every one it starts.

    Call it at any point: before or after ``import hyrax``, inside ``main()``, in a notebook
    cell. It rebinds the names hyrax's modules (and any other loaded module) took from hyrax's
    own ``tensorboardx_logger``, so no writer of the stock kind is used afterwards; it makes later
    imports of ``hyrax.tensorboardx_logger`` give hyrax_tbhub's; and it sets ``HYRAX_TBHUB=1`` so
    that processes started later switch themselves at start. Calling it again does nothing;
    :func:`stop_using_with_hyrax` undoes it.

    A tensorboardX writer that hyrax opened before the call is closed (its events stay in its
    folder) and a hub takes over the same folder: said once on stderr.
    """
    global _switch
    with _LOCK:
        if _switch is not None:
            return
        module_before = stock = sys.modules.get(hook.TARGET)
        if stock is ours:  # switched at start by HYRAX_TBHUB: nothing was bound to the stock module
            stock = None
        package = sys.modules.get("hyrax")
        switch = _Switch(stock, getattr(package, "tensorboardx_logger", None), os.environ.get(ENV),
                         module_before, any(isinstance(f, hook.HyraxFinder) for f in sys.meta_path))
        hook.install()
        if stock is not None:
            _rebind(stock, switch)
        sys.modules[hook.TARGET] = ours
        if package is not None:
            package.tensorboardx_logger = ours  # type: ignore[attr-defined]
        os.environ[ENV] = "1"
        _switch = switch
    _check_pth()
    if stock is not None:
        _take_over_open_writer(stock)


def stop_using_with_hyrax() -> None:
    """Undo :func:`use_with_hyrax`: the names, the module, the import hook and the variable.

    A hub it started for a writer that was open stays open until hyrax (now its own module
    again) or the process closes; processes already started keep what they had.
    """
    global _switch
    with _LOCK:
        switch, _switch = _switch, None
        if switch is None:
            return
        for namespace, name, old in reversed(switch.rebound):
            namespace[name] = old
        if not switch.finder_before:
            hook.uninstall()
        if switch.module_before is not None:
            sys.modules[hook.TARGET] = switch.module_before
        elif sys.modules.get(hook.TARGET) is ours:
            del sys.modules[hook.TARGET]
        package = sys.modules.get("hyrax")
        if package is not None:
            if switch.stock_attr is None:
                if package.__dict__.get("tensorboardx_logger") is ours:
                    del package.__dict__["tensorboardx_logger"]
            else:
                package.tensorboardx_logger = switch.stock_attr  # type: ignore[attr-defined]
        if switch.env_before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = switch.env_before


def _replacements(stock: ModuleType) -> dict[int, Any]:
    # Keyed by id: hyrax's handles are plain objects, but a module global may be unhashable.
    table: dict[int, Any] = {id(stock): ours}
    for name in _PUBLIC:
        value = stock.__dict__.get(name)
        if value is not None:
            table[id(value)] = getattr(ours, name)
    return table


def _rebind(stock: ModuleType, switch: _Switch) -> None:
    """Point every loaded module's references to the stock module's objects at ours."""
    table = _replacements(stock)
    handle_class = stock.__dict__.get("HyraxSummaryWriter")
    handle = ours.get_tensorboard_logger()
    for name, module in list(sys.modules.items()):
        if module is None or module is stock or name == "hyrax_tbhub" or name.startswith("hyrax_tbhub."):
            continue
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for key, value in list(namespace.items()):
            new = table.get(id(value), _MISSING)
            if new is _MISSING and handle_class is not None and type(value) is handle_class:
                new = handle  # a handle taken at import: ours is stateless as theirs was
            if new is not _MISSING:
                switch.rebound.append((namespace, key, value))
                namespace[key] = new


_MISSING: Any = object()


def _take_over_open_writer(stock: ModuleType) -> None:
    writer = stock.__dict__.get("tensorboardx_logger")
    if writer is None:
        return
    logdir = getattr(writer, "logdir", None) or getattr(writer, "log_dir", None)
    try:
        writer.close()
    finally:
        stock.tensorboardx_logger = None  # type: ignore[attr-defined]
        stock.tensorboard_start_ns = 0  # type: ignore[attr-defined]
    if logdir is None:
        warn("hyrax_tbhub: hyrax had a tensorboardX writer open when it was switched to "
             "hyrax_tbhub; it is closed now (its events are in its folder). hyrax's logging goes "
             "to a hub from its next init_tensorboard_logger on.")
        return
    ours.init_tensorboard_logger(log_dir=str(logdir))
    warn(f"hyrax_tbhub: hyrax had a tensorboardX writer open on {logdir} when it was switched to "
         f"hyrax_tbhub: it is closed now, and what it wrote stays in that folder; a hub now writes "
         f"to the same folder, so what hyrax logs from here on lands there too, each process in "
         f"its own run. hyrax's next close_tensorboard_logger closes the hub.")


def _pth_installed() -> bool:
    folders = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    if site.ENABLE_USER_SITE:
        folders.append(site.getusersitepackages())
    return any(os.path.exists(os.path.join(folder, "hyrax_tbhub.pth")) for folder in folders)


def _check_pth() -> None:
    # Without the .pth (interpreter started with -S, or a copy of the package outside any site
    # folder) spawned and forkserver children import hyrax's own module: say so once.
    global _warned_pth
    if _warned_pth or (not sys.flags.no_site and _pth_installed()):
        return
    _warned_pth = True
    warn("hyrax_tbhub: hyrax_tbhub.pth is not active in this interpreter (started with -S, or "
         "hyrax_tbhub is not installed in a site-packages folder): this process and its forked "
         "children use the hub, but spawned or forkserver children and subprocesses will log "
         "with hyrax's own module unless they call hyrax_tbhub.use_with_hyrax() themselves.")
