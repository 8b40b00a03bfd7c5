"""TensorBoardHandler: logging records as TensorBoard text, from the owner and from workers."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Iterator

import pytest

import hyrax_tbhub
from hyrax_tbhub import tensorboardx_logger
from hyrax_tbhub.logging_handler import TensorBoardHandler, encode_text_event
from hyrax_tbhub.testing import ROOT_RUN, capture_logs

# Python 3.12+ warns on every fork of a process with threads (the hub is one): not silenced
# here, as users see it too; docs/fork-safety.md says why these forks are safe.
pytestmark = [pytest.mark.timeout(120)]

LOGGER = "hyrax_tbhub.tests.handler"
JOIN_S = 60


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger of our own (not the root: pytest's capture handlers live there)."""
    log = logging.getLogger(LOGGER)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def _unwrap(text: str) -> str:
    lines = text.split("\n")
    assert lines[0] == lines[-1] and set(lines[0]) == {"`"}, text
    return "\n".join(lines[1:-1])


# -- encoding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "text", "step", "wall"),
    [
        ("logs/INFO", "hello", 3, 1.5),
        ("a", "", 0, 0.0),
        ("x" * 300, "é\n```\n" * 100, 2**40, 1234567890.25),
        ("t", "y", -5, 1.0),
        ("t", "y", None, 2.0),
    ],
)
def test_encode_text_event_matches_tensorboardx(tag: str, text: str, step: int | None, wall: float) -> None:
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.summary import text as text_summary

    expected = Event(summary=text_summary(tag, text), wall_time=wall)
    if step is not None:
        expected.step = step
    assert encode_text_event(tag, text, step, wall) == expected.SerializeToString()


# -- in the owner ---------------------------------------------------------------------------------------


def test_records_at_or_above_the_level_become_text(logger: logging.Logger) -> None:
    logger.addHandler(TensorBoardHandler(logging.INFO))
    with capture_logs() as logs:
        start_ns = tensorboardx_logger.tensorboard_start_ns
        logger.debug("not sent")
        logger.info("plain %s with_underscore", "info")
        logger.warning("careful")
        elapsed_us = (time.monotonic_ns() - start_ns) // 1000
    assert logs.tags() == ["logs/INFO/text_summary", "logs/WARNING/text_summary"]
    ((info_step, info),) = logs.texts("logs/INFO")
    ((warn_step, warn),) = logs.texts("logs/WARNING", run=ROOT_RUN)
    assert _unwrap(info) == "plain info with_underscore" and _unwrap(warn) == "careful"
    assert 0 <= info_step <= warn_step <= elapsed_us  # microseconds since the hub started
    logs.assert_not_logged("logs/DEBUG")


def test_wall_time_is_the_records(logger: logging.Logger) -> None:
    logger.addHandler(TensorBoardHandler())
    with capture_logs() as logs:
        before = time.time()
        logger.error("now")
        after = time.time()
    (entry,) = logs.select("logs/ERROR")
    assert before <= entry.wall_time <= after


def test_levels_tag_template_and_formatter(logger: logging.Logger) -> None:
    handler = TensorBoardHandler(
        levels=["warning", logging.CRITICAL], tag="{name}/{levelname}", verbatim=False
    )
    handler.setFormatter(logging.Formatter("%(levelname)s|%(message)s"))
    logger.addHandler(handler)
    with capture_logs() as logs:
        logger.info("no")
        logger.warning("w")
        logger.error("no")
        logger.critical("c")
    assert logs.texts(f"{LOGGER}/WARNING") == [(logs.texts(f"{LOGGER}/WARNING")[0][0], "WARNING|w")]
    assert [t for _, t in logs.texts(f"{LOGGER}/CRITICAL")] == ["CRITICAL|c"]
    assert len(logs.entries) == 2


def test_step_policies(logger: logging.Logger) -> None:
    logger.addHandler(TensorBoardHandler(step="count", tag="count/{levelname}", verbatim=False))
    logger.addHandler(TensorBoardHandler(step=lambda r: int(r.msg), tag="fn", verbatim=False))
    with capture_logs() as logs:
        for n in (10, 20, 30):
            logger.info(str(n))
        logger.warning("40")
    assert logs.texts("count/INFO") == [(0, "10"), (1, "20"), (2, "30")]
    assert logs.texts("count/WARNING") == [(0, "40")]
    assert logs.texts("fn") == [(10, "10"), (20, "20"), (30, "30"), (40, "40")]


def test_tracebacks_stay_verbatim(logger: logging.Logger) -> None:
    logger.addHandler(TensorBoardHandler())
    with capture_logs() as logs:
        try:
            raise ValueError("a ```fenced``` failure")
        except ValueError:
            logger.exception("failed_once")
    ((_, text),) = logs.texts("logs/ERROR")
    fence = text.split("\n", 1)[0]
    assert fence == "````"  # longer than the backtick run inside
    body = _unwrap(text)
    assert body.startswith("failed_once\nTraceback (most recent call last):")
    assert body.endswith("ValueError: a ```fenced``` failure")


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="step"):
        TensorBoardHandler(step="steps")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level"):
        TensorBoardHandler(levels=["LOUD"])


# -- never in the way ---------------------------------------------------------------------------------


class _CountingFormatter(logging.Formatter):
    calls = 0

    def format(self, record: logging.LogRecord) -> str:
        type(self).calls += 1
        return super().format(record)


def test_no_hub_means_no_work_and_no_files(logger: logging.Logger, tmp_path: os.PathLike[str]) -> None:
    handler = TensorBoardHandler()
    handler.setFormatter(_CountingFormatter())
    logger.addHandler(handler)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for _ in range(1000):
            logger.warning("nobody listens")
    finally:
        os.chdir(cwd)
    assert _CountingFormatter.calls == 0
    assert os.listdir(tmp_path) == []


def test_emit_never_raises(logger: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    errors: list[logging.LogRecord] = []
    for handler in (
        TensorBoardHandler(tag="{no_such_attribute}"),
        TensorBoardHandler(step=lambda r: 1 // 0),
    ):
        monkeypatch.setattr(handler, "handleError", errors.append)
        logger.addHandler(handler)
    with capture_logs() as logs:
        logger.warning("still fine")
    assert len(errors) == 2 and all(r.getMessage() == "still fine" for r in errors)
    assert logs.entries == []


def test_a_record_logged_from_inside_emit_does_not_recurse(logger: logging.Logger) -> None:
    class Chatty(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            logger.warning("from inside the formatter")  # would re-enter the handler
            return super().format(record)

    handler = TensorBoardHandler(verbatim=False)
    handler.setFormatter(Chatty())
    logger.addHandler(handler)
    with capture_logs() as logs:
        logger.error("outer")
    assert logs.texts("logs/ERROR") == [(logs.texts("logs/ERROR")[0][0], "outer")]
    logs.assert_not_logged("logs/WARNING")


# -- from workers -------------------------------------------------------------------------------------


def _configure() -> None:
    log = logging.getLogger(LOGGER)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(TensorBoardHandler(logging.INFO, step="count", verbatim=False))


def _log_records(n: int) -> int:
    log = logging.getLogger(LOGGER)
    for i in range(n):
        log.info("record %d from %d", i, os.getpid())
    return os.getpid()


def _forked_child(n: int) -> None:
    _log_records(n)


def test_forked_child_inherits_the_handler(logger: logging.Logger) -> None:
    logger.addHandler(TensorBoardHandler(step="count", verbatim=False))
    with capture_logs() as logs:
        logger.info("parent")
        p = multiprocessing.get_context("fork").Process(target=_forked_child, args=(3,))
        p.start()
        p.join(JOIN_S)
        assert p.exitcode == 0
    assert logs.texts("logs/INFO", run=ROOT_RUN) == [(0, "parent")]
    child = logs.texts("logs/INFO", run="ForkProcess-*")
    assert [step for step, _ in child] == [0, 1, 2]  # a forked child counts from 0 in its own run
    assert all(text.startswith(f"record {i} ") for i, (_, text) in enumerate(child))


@pytest.mark.parametrize("ctx_name", ["spawn", "forkserver"])
def test_pool_workers_configured_by_an_initializer(ctx_name: str) -> None:
    with capture_logs() as logs:
        with multiprocessing.get_context(ctx_name).Pool(2, initializer=_configure) as pool:
            pids = pool.map(_log_records, [2, 2, 2], chunksize=1)
            pool.close()
            pool.join()
    found = logs.assert_logged("logs/INFO", count=6)
    assert all(e.run != ROOT_RUN for e in found)
    assert {int(str(e.value).rsplit(" ", 1)[1]) for e in found} == set(pids)


def test_handler_after_close_is_a_no_op(logger: logging.Logger) -> None:
    logger.addHandler(TensorBoardHandler())
    with capture_logs() as logs:
        logger.warning("inside")
    logger.warning("after")  # no hub: skipped, no error, no file
    assert len(logs.texts("logs/WARNING")) == 1
    assert hyrax_tbhub.get_tensorboard_logger().get_logdir() is None
