"""Functions the SummaryWriter compatibility tests run in child processes (importable under spawn)."""

from __future__ import annotations

from typing import Any


def file_writer_calls(writer: Any, tag: str) -> str:
    """Log through ``writer.file_writer`` and ``writer._get_file_writer()`` as the recipes do."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.summary import scalar

    fw = writer.file_writer
    fw.add_summary(scalar(tag, 1.0), 3)
    writer._get_file_writer().add_event(Event(summary=scalar(tag, 2.0)), 4, 1234.5)
    with writer.use_metadata(global_step=9, walltime=99.0):
        writer.add_scalar(tag + "/meta", 5.0)
        writer.add_text(tag + "/meta", "text")
    fw.flush()
    return str(fw.get_logdir())


def scenario(writer: Any, cast_bfloat16: bool = False) -> None:
    """One of each kind of call the compatibility tests compare, every wall time given.

    ``cast_bfloat16``: for the stock tensorboardX writer, which raises on bfloat16, the tensor
    is cast first as torch's writer casts it (our writer does that itself).
    """
    import numpy as np
    import torch
    from tensorboardX.summary import scalar

    g = torch.Generator().manual_seed(1)
    half = torch.rand(64, generator=g).to(torch.bfloat16)
    if cast_bfloat16:
        half = half.to(torch.float16)
    w = 1000.0
    writer.add_scalar("scalar/plain", 0.5, 1, w)
    writer.add_scalar("scalar/int", 3, 2, w + 1)
    writer.add_scalar("scalar/numpy", np.float32(1.25), 3, w + 2)
    writer.add_scalar("scalar/tensor", torch.tensor(2.5), 4, w + 3)
    writer.add_scalar("scalar/described", 1.0, 5, w + 4, "Shown name", "a description")
    writer.add_text("text/plain", "hello", 1, w + 5)
    with writer.use_metadata(global_step=7, walltime=w + 6):
        writer.add_scalar("meta/scalar", 4.0)
        writer.add_text("meta/text", "under metadata")
        writer.add_histogram("meta/histogram", np.arange(20.0))
        writer.file_writer.add_summary(scalar("meta/file_writer", 6.0))
    writer.add_histogram("histogram/bfloat16", half, 1, walltime=w + 7)
    writer.add_histogram("histogram/numpy", np.linspace(-1, 1, 50), 2, walltime=w + 8)
    writer.add_image("image/chw", torch.rand(3, 6, 6, generator=g), 1, w + 9)
    writer.add_pr_curve("pr", np.array([1, 0, 1, 1]), np.array([0.9, 0.2, 0.6, 0.4]), 1, walltime=w + 10)
    writer.add_scalars("pair", {"a": 1.0, "b": 2.0}, 1, w + 11)
    writer._get_file_writer().add_summary(scalar("file_writer/summary", 8.0), 9, w + 12)
    writer.add_custom_scalars({"cat": {"chart": ["Multiline", ["scalar/plain", "scalar/int"]]}})
    writer.flush()


def scenario_in_child(writer: Any) -> str:
    """``scenario`` in a child process; returns the child's run folder."""
    if writer is None:
        import hyrax_tbhub

        writer = hyrax_tbhub.get_tensorboard_logger()
    scenario(writer)
    return str(writer.file_writer.get_logdir())
