"""tensorboardX ``SummaryWriter``'s methods with their exact signatures, written once.

Both public writers inherit them: the process-wide handle
(:class:`hyrax_tbhub.tensorboardx_logger.HyraxSummaryWriter`) and
:class:`hyrax_tbhub.SummaryWriter`. Each method runs tensorboardX's own code in the calling
process (so bad arguments raise there, as tensorboardX would) against the channel that the one
hook, ``_channel_now``, returns; with no channel it does nothing.

Parameter names, order, kinds and defaults are tensorboardX 2.6's (tests/test_surface_signatures.py
checks them against the installed tensorboardX); the annotations are its own, with torch tensors
spelt :data:`TensorLike` (tensorboardX's ``make_np`` also takes numpy arrays, lists and numbers)
and a parameter it leaves unannotated typed ``Any``. Reading tensorboardX's class instead would
import it, and with it torch: seconds in every worker that only logs scalars.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from ._events import encode_text_event
from ._writer_state import WriterState

__all__ = ["TensorLike", "WriterMethods", "next_ts_step"]

#: A torch tensor, numpy array, number or nested list: whatever tensorboardX's ``make_np`` takes.
TensorLike: TypeAlias = Any

_time = time.time
_monotonic_ns = time.monotonic_ns
_TS_TAGS_MAX = 65536  # tags a writer remembers the last ``*_ts`` step of, before it forgets them all


def next_ts_step(last_steps: dict[str, int], tag: str, step: int) -> int:
    """``step``, or one past the last step ``last_steps`` holds for ``tag``; recorded there.

    The one rule of both writers' ``_ts_step`` (each keeps its own ``last_steps``).
    """
    last = last_steps.get(tag)
    if last is not None and step <= last:
        step = last + 1
    if len(last_steps) > _TS_TAGS_MAX:
        last_steps.clear()  # a tag per call would otherwise grow it without bound
    last_steps[tag] = step
    return step


def _audio_ready(value: Any) -> Any:
    """A clip torch's ``add_audio`` takes, as tensorboardX's takes it.

    torch's shape ``(1, L)`` becomes the 1-D clip it means: tensorboardX reads a 2-D clip as
    ``(frames, channels)`` and refuses more than two channels, torch's writer squeezes it (mono
    only); a ``(1, 1)`` or ``(1, 2)`` clip is left alone. Half precision becomes float32:
    tensorboardX's soundfile refuses float16, torch's writer converts it.
    """
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) == 2 and shape[0] == 1 and shape[1] > 2:
        value = value.reshape(-1)
    dtype = str(getattr(value, "dtype", ""))
    if dtype in ("float16", "torch.float16", "torch.bfloat16"):
        value = value.float() if dtype.startswith("torch") else value.astype("float32")
    return value


class WriterMethods(WriterState):
    """The methods of ``tensorboardX.SummaryWriter``, run against ``self._channel_now()``.

    A subclass provides the hooks ``_channel_now`` (the channel to log to in this process, or
    None) and ``_ts_step``, and the methods whose semantics are its own: ``flush``, ``close``,
    ``get_logdir``, and ``add_scalar``'s fast path that skips tensorboardX for plain numbers.
    The fast paths check the writer's state (``_writer_state``) before skipping tensorboardX.
    """

    __slots__ = ()

    def _ts_step(self, tag: str, step: int) -> int:
        """The step for a ``*_ts`` call: ``step``, or one past the last one given for ``tag``."""
        raise NotImplementedError

    def _run(self, method: str, /, *args: Any, **kwargs: Any) -> None:
        """Call tensorboardX's ``method`` on this process's channel (nothing without one)."""
        ch = self._channel_now()
        if ch is None:
            return
        self._call(ch, method, args, kwargs)

    if TYPE_CHECKING:  # each writer has its own: its channel, then the shared fast path (_put_scalar)

        def add_scalar(self, tag: str, scalar_value: TensorLike, global_step: int | None = None) -> None: ...

    def log_scalar_ts(
        self, name: str, scalar: float | TensorLike, since_tensorboard_start_ns: int | None = None
    ) -> None:
        """hyrax's helper: log ``scalar`` with step = whole microseconds since the hub started.

        Or since ``since_tensorboard_start_ns`` when given. Without it the step never repeats for
        a tag in one process: TensorBoard shows one point per step, so a second call within the
        same microsecond is placed one microsecond later instead of hiding the first.
        """
        ch = self._channel_now()
        if ch is None:
            return
        if since_tensorboard_start_ns is None:
            step = self._ts_step(name, (_monotonic_ns() - ch.start_ns) // 1000)
        else:
            step = int(since_tensorboard_start_ns) // 1000
        self.add_scalar(name, scalar, step)

    def log_duration_ts(self, name: str, start_time: int) -> None:
        """hyrax's helper: log seconds since ``start_time`` (a ``time.monotonic_ns()`` reading).

        The step is whole microseconds since the hub started, as for :meth:`log_scalar_ts`
        (hyrax logs milliseconds here by accident).
        """
        ch = self._channel_now()
        if ch is None:
            return
        now = _monotonic_ns()
        self.add_scalar(name, (now - start_time) / 1e9, self._ts_step(name, (now - ch.start_ns) // 1000))

    def add_text(
        self, tag: str, text_string: str, global_step: int | None = None, walltime: float | None = None
    ) -> None:
        """As ``SummaryWriter.add_text``; plain strings skip tensorboardX (and its torch import)."""
        ch = self._channel_now()
        if ch is None:
            return
        if type(tag) is str and type(text_string) is str and self._meta is None:
            step = None if global_step is None else int(global_step)
            wall = _time() if walltime is None else walltime
            ch.put_event("", encode_text_event(tag, text_string, step, wall))
        else:
            self._call(ch, "add_text", (tag, text_string, global_step, walltime), {})

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: Mapping[str, float],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """As ``SummaryWriter.add_scalars``: one run per key below ``main_tag``, on one chart."""
        self._run("add_scalars", main_tag, tag_scalar_dict, global_step, walltime)

    def add_hparams(
        self,
        hparam_dict: dict[str, Any],
        metric_dict: dict[str, Any],
        name: str | None = None,
        global_step: int | None = None,
    ) -> None:
        """As ``SummaryWriter.add_hparams``: the session goes into the sub-run ``name``."""
        self._run("add_hparams", hparam_dict, metric_dict, name, global_step)

    def add_histogram(
        self,
        tag: str,
        values: TensorLike,
        global_step: int | None = None,
        bins: str | None = "tensorflow",
        walltime: float | None = None,
        max_bins: Any = None,
    ) -> None:
        """As ``SummaryWriter.add_histogram``."""
        self._run("add_histogram", tag, values, global_step, bins, walltime, max_bins)

    def add_histogram_raw(
        self,
        tag: str,
        min: Any,  # noqa: A002 - tensorboardX's names
        max: Any,  # noqa: A002
        num: Any,
        sum: Any,  # noqa: A002
        sum_squares: Any,
        bucket_limits: Any,
        bucket_counts: Any,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """As ``SummaryWriter.add_histogram_raw``."""
        self._run(
            "add_histogram_raw", tag, min, max, num, sum, sum_squares, bucket_limits, bucket_counts,
            global_step, walltime,
        )

    def add_image(
        self,
        tag: str,
        img_tensor: TensorLike,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str | None = "CHW",
    ) -> None:
        """As ``SummaryWriter.add_image``."""
        self._run("add_image", tag, img_tensor, global_step, walltime, dataformats)

    def add_images(
        self,
        tag: str,
        img_tensor: TensorLike,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str | None = "NCHW",
    ) -> None:
        """As ``SummaryWriter.add_images``."""
        self._run("add_images", tag, img_tensor, global_step, walltime, dataformats)

    def add_image_with_boxes(
        self,
        tag: str,
        img_tensor: TensorLike,
        box_tensor: TensorLike,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str | None = "CHW",
        labels: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """As ``SummaryWriter.add_image_with_boxes`` (``kwargs`` go to its box drawing: ``rescale``)."""
        self._run(
            "add_image_with_boxes", tag, img_tensor, box_tensor, global_step, walltime, dataformats,
            labels, **kwargs,
        )

    def add_figure(
        self,
        tag: str,
        figure: Any,
        global_step: int | None = None,
        close: bool | None = True,
        walltime: float | None = None,
    ) -> None:
        """As ``SummaryWriter.add_figure`` (a matplotlib figure or a list of them)."""
        self._run("add_figure", tag, figure, global_step, close, walltime)

    def add_video(
        self,
        tag: str,
        vid_tensor: TensorLike,
        global_step: int | None = None,
        fps: int | float | None = 4,
        walltime: float | None = None,
        dataformats: str | None = "NTCHW",
    ) -> None:
        """As ``SummaryWriter.add_video``."""
        self._run("add_video", tag, vid_tensor, global_step, fps, walltime, dataformats)

    def add_audio(
        self,
        tag: str,
        snd_tensor: TensorLike,
        global_step: int | None = None,
        sample_rate: int | None = 44100,
        walltime: float | None = None,
    ) -> None:
        """As ``SummaryWriter.add_audio``: tensorboardX's shapes (``L`` or ``(L, channels)``) and
        torch's ``(1, L)``."""
        self._run("add_audio", tag, _audio_ready(snd_tensor), global_step, sample_rate, walltime)

    def add_graph(
        self, model: Any, input_to_model: Any = None, verbose: Any = False, use_strict_trace: Any = True
    ) -> None:
        """As ``SummaryWriter.add_graph`` (traces a torch model in this process)."""
        self._run("add_graph", model, input_to_model, verbose, use_strict_trace)

    def add_onnx_graph(self, onnx_model_file: Any) -> None:
        """As ``SummaryWriter.add_onnx_graph``."""
        self._run("add_onnx_graph", onnx_model_file)

    def add_openvino_graph(self, xmlname: Any) -> None:
        """As ``SummaryWriter.add_openvino_graph``."""
        self._run("add_openvino_graph", xmlname)

    def add_embedding(
        self,
        mat: TensorLike,
        metadata: Any = None,
        label_img: TensorLike = None,
        global_step: int | None = None,
        tag: Any = "default",
        metadata_header: Any = None,
    ) -> None:
        """As ``SummaryWriter.add_embedding``."""
        self._run("add_embedding", mat, metadata, label_img, global_step, tag, metadata_header)

    def add_pr_curve(
        self,
        tag: str,
        labels: TensorLike,
        predictions: TensorLike,
        global_step: int | None = None,
        num_thresholds: int | None = 127,
        weights: Any = None,
        walltime: float | None = None,
    ) -> None:
        """As ``SummaryWriter.add_pr_curve``."""
        self._run("add_pr_curve", tag, labels, predictions, global_step, num_thresholds, weights, walltime)

    def add_pr_curve_raw(
        self,
        tag: str,
        true_positive_counts: TensorLike,
        false_positive_counts: TensorLike,
        true_negative_counts: TensorLike,
        false_negative_counts: TensorLike,
        precision: TensorLike,
        recall: TensorLike,
        global_step: int | None = None,
        num_thresholds: int | None = 127,
        weights: Any = None,
        walltime: float | None = None,
    ) -> None:
        """As ``SummaryWriter.add_pr_curve_raw``."""
        self._run(
            "add_pr_curve_raw", tag, true_positive_counts, false_positive_counts, true_negative_counts,
            false_negative_counts, precision, recall, global_step, num_thresholds, weights, walltime,
        )

    def add_mesh(
        self,
        tag: str,
        vertices: TensorLike,
        colors: TensorLike = None,
        faces: TensorLike = None,
        config_dict: Any = None,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """As ``SummaryWriter.add_mesh``."""
        self._run("add_mesh", tag, vertices, colors, faces, config_dict, global_step, walltime)

    def add_custom_scalars(self, layout: dict[str, dict[str, list[Any]]]) -> None:
        """As ``SummaryWriter.add_custom_scalars``."""
        self._run("add_custom_scalars", layout)

    def add_custom_scalars_marginchart(
        self, tags: list[str], category: str = "default", title: str = "untitled"
    ) -> None:
        """As ``SummaryWriter.add_custom_scalars_marginchart``."""
        self._run("add_custom_scalars_marginchart", tags, category, title)

    def add_custom_scalars_multilinechart(
        self, tags: list[str], category: str = "default", title: str = "untitled"
    ) -> None:
        """As ``SummaryWriter.add_custom_scalars_multilinechart``."""
        self._run("add_custom_scalars_multilinechart", tags, category, title)

    def export_scalars_to_json(self, path: Any) -> None:
        """As ``SummaryWriter.export_scalars_to_json``."""
        self._run("export_scalars_to_json", path)
