"""Point 6, bad calls: calls where the caller is at fault, odd but legal values, oversized events."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import hyrax_tbhub
from hyrax_tbhub.testing import dropped_tag

from faults.common import dropped, redirect_stderr, report


def _noise_image(side: int) -> Any:
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, size=(3, side, side), dtype=np.uint8)


def _meta_tensor() -> Any:
    import torch

    return torch.tensor(1.0, device="meta")  # stands in for a tensor on a device this process cannot read


def _vector_tensor() -> Any:
    import torch

    return torch.tensor([1.0, 2.0])


#: Calls where the caller is at fault: each must raise at the call site, and leave logging working.
CALLER_FAULTS: dict[str, Callable[[Any], Any]] = {
    "value_not_a_number": lambda w: w.add_scalar("bad/value", object(), 1),
    "value_vector_tensor": lambda w: w.add_scalar("bad/vector", _vector_tensor(), 1),
    "value_tensor_on_meta_device": lambda w: w.add_scalar("bad/meta", _meta_tensor(), 1),
    "tag_not_a_string": lambda w: w.add_scalar(5, 1.0, 1),
    "step_nan": lambda w: w.add_scalar("bad/step", 1.0, float("nan")),
    "step_beyond_int64": lambda w: w.add_scalar("bad/step", 1.0, 2**70),
    "step_just_beyond_int64": lambda w: w.add_scalar("bad/step", 1.0, 2**63),
    "walltime_not_a_number": lambda w: w.add_scalar("bad/walltime", 1.0, 1, walltime="yesterday"),
    "walltime_unpicklable": lambda w: w.add_scalar("bad/walltime", 1.0, 1, walltime=threading.Lock()),
    "image_wrong_shape": lambda w: w.add_image("bad/image", _noise_image(4)[0, 0], 1),
    "histogram_of_text": lambda w: w.add_histogram("bad/histogram", "not numbers", 1),
}


def bad_call(case: str, result: str) -> None:
    """Log, make the bad call ``case``, log again; report what the call did and whether logging survived."""
    w = hyrax_tbhub.get_tensorboard_logger()
    w.add_scalar("good/before", 1.0, 0)
    out: dict[str, Any] = {"before_flush": w.flush(30)}
    try:
        CALLER_FAULTS[case](w)
        out["raised"] = None
    except Exception as exc:
        out["raised"] = type(exc).__name__
        out["message"] = str(exc)[:200]
    w.add_scalar("good/after", 2.0, 1)
    out["after_flush"] = w.flush(30)
    out["dropped"] = dropped()
    report(result, out)


def odd_values_and_tags(result: str) -> None:
    """Values and tags that are legal but unusual: all must land, exactly as tensorboardX writes them."""
    import numpy as np

    w = hyrax_tbhub.get_tensorboard_logger()
    values = {
        "v/nan": float("nan"),
        "v/inf": float("inf"),
        "v/-inf": float("-inf"),
        "v/big": 1e300,
        "v/tiny": 1e-320,
        "v/np_nan": np.float32("nan"),
        "v/np_int": np.int64(7),
        "v/int": 2**40,
        "v/bool": True,
    }
    for tag, value in values.items():
        w.add_scalar(tag, value, 1)
    for i, tag in enumerate(ODD_TAGS):
        w.add_scalar(tag, float(i), i)
    report(result, {"flush": w.flush(30), "dropped": dropped()})


ODD_TAGS = [
    "a b",
    "ü/ß/中文",
    "../../escape",
    "/leading/slash",
    "",
    "tab\there",
    "new\nline",
    "nul\0byte",
    "x" * 5000,
    "dots...",
    dropped_tag("fake"),  # a producer may log a tag that looks like a counter: it is its own
    "emoji/🙂",
]


def figure_and_images(result: str, side: int) -> None:
    """A matplotlib figure and a large noise image (``side`` x ``side``): both must land."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = hyrax_tbhub.get_tensorboard_logger()
    fig = plt.figure()
    plt.plot([1, 2, 3])
    w.add_figure("fig/line", fig, 1)
    w.add_image("img/huge", _noise_image(side), 1)
    report(result, {"flush": w.flush(60), "dropped": dropped()})


def oversized_event(result: str, stderr: str, side: int) -> None:
    """An image larger than the hub's Options.queue_max_bytes: it cannot be sent; how is the caller told?"""
    redirect_stderr(stderr)
    w = hyrax_tbhub.get_tensorboard_logger()
    out: dict[str, Any] = {}
    try:
        w.add_image("img/oversized", _noise_image(side), 1)
        out["raised"] = None
    except Exception as exc:
        out["raised"] = type(exc).__name__
        out["message"] = str(exc)[:300]
    w.add_scalar("good/after", 1.0, 1)
    out["flush"] = w.flush(30)
    out["dropped"] = dropped()
    report(result, out)


def log_cursed(result: str) -> None:
    """Log 10 points of "cursed" (the test makes the hub fail on them) and 10 of "fine"."""
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(10):
        w.add_scalar("cursed", float(step), step)
    first = w.flush(30)
    for step in range(10):
        w.add_scalar("fine", float(step), step)
    report(result, {"flush": [first, w.flush(30)]})
