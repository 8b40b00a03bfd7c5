"""The public writers have tensorboardX's SummaryWriter methods, with its exact signatures.

Both the process-wide handle (in each of the classes it takes at run time) and
``hyrax_tbhub.SummaryWriter`` are checked against the installed tensorboardX: same parameter
names, order, kinds and defaults for every public method, and each call reaches tensorboardX's
method of the same name with the same arguments. A method tensorboardX gains is a failure here.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import pytest

import hyrax_tbhub
from hyrax_tbhub import tensorboardx_logger as tbl
from hyrax_tbhub.testing import running_hub

tensorboardX = pytest.importorskip("tensorboardX")
TBX = tensorboardX.SummaryWriter

#: The handle's classes: which one it is depends on the process's state (hub, none, watching).
HANDLE_CLASSES = [tbl.HyraxSummaryWriter, tbl._IdleWriter, tbl._WatchingWriter]
WRITER_CLASSES = [*HANDLE_CLASSES, hyrax_tbhub.SummaryWriter]

#: Parameters we add after tensorboardX's, each with a default (so every tensorboardX call works).
EXTENSIONS = {"flush": ("timeout",)}

#: Methods whose semantics are ours (they never call tensorboardX's) or that skip it on a fast path.
NOT_FORWARDED = {"flush", "close", "add_scalar", "add_text", "use_metadata"}


def _tbx_methods() -> list[str]:
    return sorted(n for n in dir(TBX) if not n.startswith("_") and callable(getattr(TBX, n)))


def _params(func: Callable[..., Any]) -> list[inspect.Parameter]:
    return list(inspect.signature(func).parameters.values())[1:]  # without self


def _shape(params: list[inspect.Parameter]) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in params]


def _candidates(func: Callable[..., Any]) -> list[Callable[..., Any]]:
    """The overloads of ``func`` when it has some (both libraries' orders), else ``func``."""
    get_overloads = getattr(typing, "get_overloads", None)  # Python >= 3.11
    overloads = list(get_overloads(func)) if get_overloads is not None else []
    return overloads or [func]


def test_tensorboardx_has_the_methods_we_list() -> None:
    assert set(_tbx_methods()) == set(tbl.WRITER_METHODS)


@pytest.mark.parametrize("cls", WRITER_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", _tbx_methods())
def test_every_tensorboardx_method_has_its_signature(cls: type, name: str) -> None:
    assert hasattr(cls, name), f"{cls.__name__} lacks tensorboardX's {name}"
    ours = getattr(cls, name)
    theirs = _shape(_params(getattr(TBX, name)))
    shapes = [_shape(_params(candidate)) for candidate in _candidates(ours)]
    matching = [shape for shape in shapes if shape[: len(theirs)] == theirs]
    assert matching, f"{cls.__name__}.{name}: tensorboardX has {theirs}, we have {shapes}"
    # Past tensorboardX's parameters, only the extensions we mean, each with a default.
    extras = [shape[len(theirs):] for shape in matching]
    allowed = EXTENSIONS.get(name, ())
    assert any(
        tuple(n for n, _, _ in extra) in ((), allowed)
        and all(default is not inspect.Parameter.empty for _, _, default in extra)
        for extra in extras
    ), (name, extras)


def test_the_writer_also_has_torchs_orders_where_they_differ() -> None:
    torch_tb = pytest.importorskip("torch.utils.tensorboard")
    theirs = torch_tb.SummaryWriter
    for name in ("add_scalar", "add_hparams", "add_tensor"):
        shapes = [_shape(_params(c)) for c in _candidates(getattr(hyrax_tbhub.SummaryWriter, name))]
        assert _shape(_params(getattr(theirs, name))) in shapes, (name, shapes)
    public = {n for n in dir(theirs) if not n.startswith("_") and callable(getattr(theirs, n))}
    assert public <= set(dir(hyrax_tbhub.SummaryWriter))


class _Recorder:
    """Stands for tensorboardX's writer: records each call by name."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def record(*args: Any, **kwargs: Any) -> str:
            self.calls.append((name, args, kwargs))
            return f"result of {name}"

        return record


class _FakeChannel:
    start_ns = 0

    def __init__(self) -> None:
        self.recorder = _Recorder()

    def writer(self) -> _Recorder:
        return self.recorder


def _value_for(param: inspect.Parameter, k: int) -> Any:
    # A value of the annotated kind where our code looks at the type (tensorboardX's string in
    # torch's position, an int step), a unique object elsewhere.
    note = str(param.annotation)
    if "str" in note:
        return f"<{param.name}>"
    if "int" in note and "float" not in note:
        return 1000 + k
    return object()


def _handle_with(channel: _FakeChannel) -> Any:
    class Handle(tbl.HyraxSummaryWriter):
        __slots__ = ()

        def _channel_now(self) -> Any:
            return channel

    return Handle()


def _writer_with(channel: _FakeChannel) -> Any:
    writer = object.__new__(hyrax_tbhub.SummaryWriter)
    writer._channel, writer._owned, writer._closed, writer._last_ts = channel, None, False, {}
    writer._meta = None
    return writer


@pytest.mark.parametrize("make", [_handle_with, _writer_with], ids=["handle", "SummaryWriter"])
@pytest.mark.parametrize("name", sorted(set(_tbx_methods()) - NOT_FORWARDED))
def test_each_method_calls_tensorboardx_with_the_same_arguments(make: Any, name: str) -> None:
    channel = _FakeChannel()
    params = _params(getattr(TBX, name))
    args = [_value_for(p, k) for k, p in enumerate(params) if p.kind is p.POSITIONAL_OR_KEYWORD]
    kwargs = {p.name: _value_for(p, k) for k, p in enumerate(params) if p.kind is p.KEYWORD_ONLY}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        kwargs["rescale"] = object()
    getattr(make(channel), name)(*args, **kwargs)
    [(called, got_args, got_kwargs)] = channel.recorder.calls
    assert called == name
    sig = inspect.signature(getattr(TBX, name))
    assert sig.bind(None, *got_args, **got_kwargs).arguments == sig.bind(None, *args, **kwargs).arguments


def test_init_takes_tensorboardxs_constructor_arguments_by_name() -> None:
    """hyrax's init passed ``**kwargs`` to tensorboardX's constructor: the same names, by keyword,
    with its defaults (``comet_config``'s None stands for its disabled default), plus ``options``."""
    theirs = _params(TBX.__init__)
    ours = {p.name: p for p in inspect.signature(hyrax_tbhub.init_tensorboard_logger).parameters.values()}
    assert all(p.kind is p.KEYWORD_ONLY for p in ours.values())
    named = [p for p in theirs if p.kind is not p.VAR_KEYWORD]
    assert set(ours) == {p.name for p in named} | {"options"}
    for p in named:
        if p.name != "comet_config":
            assert ours[p.name].default == p.default, p.name


def test_a_keyword_tensorboardx_does_not_take_raises_at_the_call(tmp_path: Any) -> None:
    with pytest.raises(TypeError):
        hyrax_tbhub.init_tensorboard_logger(log_dri=str(tmp_path))  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        hyrax_tbhub.SummaryWriter(str(tmp_path), bogus_kw=1)  # type: ignore[call-arg]
    assert running_hub() is None  # nothing started
