"""What a benchmark run measures: the contenders, the targets, the sizes, one run's spec and result."""

from __future__ import annotations

import dataclasses

CONTENDERS: dict[str, str] = {
    "a": "(a) tensorboardX, one process",
    "b": "(b) mp.Queue + thread + 1 writer",
    "c": "(c) one writer per process",
    "d": "(d) hyrax_tbhub",
}
# A process with no hub: a top-level one knows it never gets one; a multiprocessing child may still.
NOHUB_TOP = "top_level"
NOHUB_CHILD = "spawn_child"
NOHUB_WHERE = {NOHUB_TOP: "top-level process", NOHUB_CHILD: "spawned multiprocessing child"}

# Same tags in every producer, as in real training code: each producer's steps are its own counter.
TAGS: dict[str, tuple[str, str, str, str]] = {
    "scalar": ("loss", "lr", "time/read_s", "accuracy"),
    "histogram": ("weights/conv1", "weights/conv2", "grads/conv1", "grads/conv2"),
    "image": ("samples/input", "samples/recon", "samples/target", "samples/diff"),
}

# The targets hyrax_tbhub is held to. Memory has no number of its own: a hub must not cost more
# than the writer it replaces, so it is held against the in-process writer (a) and, for
# producers, against (c), whose producers each hold a whole SummaryWriter.
TARGET_SPEEDUP_4 = 10.0
TARGET_CALLER_US = 2.0
TARGET_CALLER_MEAN_US = 1.5  # one producer, mean over the whole loop, sender included
TARGET_NOHUB_RATIO = 2.0
TARGET_SCALING_16_4 = 0.8
TARGET_SINGLE_RATIO = 1.0
TARGET_HUB_MEM_RATIO = 1.5
TARGET_PRODUCER_MEM_RATIO = 1.25

SETUP_TIMEOUT_S = 180.0  # 16 spawned interpreters importing tensorboardX and torch on 2 cores


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run; ``--quick`` shrinks all of them."""

    producers: tuple[int, ...] = (1, 4, 16)
    events_per_producer: int = 100_000
    # Caps producers * events so 16 producers log what 4 do. Large enough that starting and
    # ending 16 processes on 2 cores (~0.2 s) does not hide the throughput being compared.
    max_total: int = 400_000
    media_producers: int = 4
    hist_per_producer: int = 1_000
    image_per_producer: int = 500
    chunk: int = 1_000
    nohub_calls: int = 200_000
    nohub_repeats: int = 7
    flush_rounds: int = 20
    flush_batch: int = 100
    repeats: int = 1
    contenders: str = "abcd"
    timeout_s: float = 600.0
    exit_floor: bool = True  # also time (d) with producers that log nothing
    media: bool = True  # histogram and image runs

    def scalar_events(self, producers: int) -> int:
        return max(1, min(self.events_per_producer, self.max_total // max(producers, 1)))


# A spawned process that imports tensorboardX imports torch with it when installed (~2 s of CPU), so
# the smoke run keeps the process count down rather than only the event count.
QUICK = Config(
    producers=(2,),
    events_per_producer=200,
    max_total=400,
    media_producers=1,
    hist_per_producer=20,
    image_per_producer=10,
    chunk=50,
    nohub_calls=20_000,
    nohub_repeats=3,
    flush_rounds=5,
    flush_batch=10,
    timeout_s=240.0,
    exit_floor=False,
)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One measurement. ``producers == 0`` means the owner logs everything itself."""

    contender: str
    kind: str
    producers: int
    per_producer: int  # events per producer; (a) logs producers * per_producer in-process
    chunk: int
    flush_rounds: int = 0  # > 0: flush-latency mode, flush_batch events then one timed flush()
    flush_batch: int = 0

    @property
    def streams(self) -> int:
        """Event streams to log: (a) replays every producer's stream in its single process."""
        return max(self.producers, 1)

    @property
    def expected(self) -> int:
        return self.streams * self.per_producer

    @property
    def mode(self) -> str:
        if self.flush_rounds:
            return "flush"
        return "exit-floor" if self.per_producer == 0 else "throughput"

    @property
    def label(self) -> str:
        return f"{self.mode} {self.kind} P={self.producers} {CONTENDERS[self.contender]}"


@dataclasses.dataclass
class RunResult:
    """Figures of one measurement, as written to ``--json``."""

    contender: str
    kind: str
    producers: int
    per_producer: int
    expected: int
    counted: int = 0
    lost: int = 0
    seconds: float | None = None
    calls_done_s: float | None = None  # until the last producer reported its last call returned
    events_per_s: float | None = None
    caller_us_median: float | None = None
    caller_us_worst_chunk: float | None = None
    # Whole-loop figures, mean over the producers (streams) of each one's per-call mean; see _log_stream.
    caller_us_mean: float | None = None
    caller_us_mean_worst: float | None = None  # the slowest producer's loop mean
    caller_us_flushed: float | None = None
    caller_cpu_us: float | None = None
    owner_peak_mib: float | None = None
    producer_peak_mib: float | None = None
    flush_us: list[float] = dataclasses.field(default_factory=list)
    flush_failed: int = 0  # flush() calls that returned False (hyrax_tbhub: not everything on disk)
    run_dirs: int = 0
    error: str | None = None
    mode: str = "throughput"
