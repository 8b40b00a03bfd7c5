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
