"""Real uses of the public API, type-checked by ``mypy --strict`` (pyproject's [tool.mypy] files).

Never run: mypy checks that each use type-checks, so a signature change that breaks a user's call
breaks CI. tests/test_surface_typing.py checks the converse, that wrong uses are type errors.
"""

from __future__ import annotations

import time

import hyrax_tbhub
from hyrax_tbhub import Options, SummaryWriter, tensorboardx_logger
from hyrax_tbhub.integrations.lightning import TensorBoardHubLogger


def hyrax_style(log_dir: str) -> None:
    hyrax_tbhub.init_tensorboard_logger(log_dir=log_dir, options=Options(queue_max_events=1000))
    logger = hyrax_tbhub.get_tensorboard_logger()
    logger.add_scalar("loss", 0.5, 1)
    logger.add_scalar("loss", 0.25, global_step=2, walltime=time.time(), display_name="Loss")
    logger.add_scalars("parts", {"a": 1.0, "b": 2.0}, 3)
    logger.add_text("note", "hello", 0)
    logger.add_histogram("weights", [1.0, 2.0, 3.0], 4, bins="auto")
    logger.add_hparams({"lr": 0.1, "opt": "sgd"}, {"hp/acc": 0.9}, name="trial", global_step=1)
    with logger.use_metadata(global_step=5):
        logger.add_scalar("inside", 1.0)
    logger.log_scalar_ts("latency", 0.01)
    logger.log_duration_ts("epoch", time.monotonic_ns())
    done: bool = logger.flush(timeout=10.0)
    folder: str | None = logger.get_logdir()
    print(done, folder, tensorboardx_logger.tensorboard_start_ns)
    logger.close()
    hyrax_tbhub.close_tensorboard_logger()


def tensorboardx_style(log_dir: str) -> None:
    with SummaryWriter(log_dir, comment="run", filename_suffix=".x", options=Options(close_timeout=5.0)) as w:
        w.add_scalar("loss", 1.0, 0, None, "Loss", "the training loss")  # tensorboardX's positional order
        w.add_image("img", [[[0.0]]], 0, dataformats="CHW")
        w.add_images("imgs", [[[[0.0]]]], 0)
        w.add_image_with_boxes("boxed", [[[0.0]]], [[0, 0, 1, 1]], 0, labels=["a"], rescale=2)
        w.add_figure("fig", object(), 0, close=True)
        w.add_video("vid", [[[[[0.0]]]]], 0, fps=4)
        w.add_audio("snd", [0.0, 0.1], 0, sample_rate=16000)
        w.add_embedding([[1.0, 2.0]], metadata=["a"], tag="emb")
        w.add_pr_curve("pr", [0, 1], [0.2, 0.8], 0, num_thresholds=10)
        w.add_pr_curve_raw("prr", [1], [1], [1], [1], [1.0], [1.0], 0)
        w.add_mesh("mesh", [[[0.0, 0.0, 0.0]]], global_step=0)
        w.add_histogram_raw("raw", 0.0, 1.0, 2, 1.0, 1.0, [0.5, 1.0], [1, 1], 0)
        w.add_custom_scalars({"cat": {"chart": ["Multiline", ["loss"]]}})
        w.add_custom_scalars_marginchart(["a", "b", "c"], category="cat", title="margin")
        w.add_custom_scalars_multilinechart(["a", "b"])
        w.add_hparams({"lr": 0.1}, {"hp/acc": 0.5}, "tbx_name", 1)
        w.export_scalars_to_json("scalars.json")
        child = w  # handed to other processes as is (pickled or inherited)
        child.flush()


def torch_style(log_dir: str) -> None:
    w = SummaryWriter(log_dir=log_dir, purge_step=0, max_queue=10, flush_secs=120)
    w.add_scalar("loss", 1.0, 0, new_style=True, double_precision=False)
    w.add_scalar("loss", 1.0, 1, None, True, True)
    w.add_hparams({"lr": 0.1}, {"hp/acc": 0.5}, hparam_domain_discrete={"opt": ["sgd"]}, run_name="trial")
    w.add_tensor("t", [1.0, 2.0], 0)
    w.add_graph(object(), None, verbose=False, use_strict_trace=True)
    print(w.log_dir, w.logdir, w.get_logdir(), w.purge_step, w.max_queue, w.flush_secs, w.filename_suffix)
    w.aggregate("loss*", every_s=1.0).close()


def lightning_style(save_dir: str) -> None:
    tb = TensorBoardHubLogger(save_dir, name="exp", version=0)
    tb.experiment.add_scalar("x", 1.0, 0)
    tb.log_metrics({"acc": 0.5}, step=1)
    tb.close()
