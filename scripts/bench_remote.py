"""What rank 0 pays for remote producers: per connection and per event (docs/scaling.md).

A "rank 0" process runs a hub that also listens on TCP (as ``serve_ranks()`` makes it) and does
nothing else, so its CPU time (getrusage) is the hub's. Producer processes each hold many real
``Producer`` objects (the same class a DataLoader worker uses, one socket and sender thread each)
connected over TCP on loopback. Phases, each measured as rank 0's CPU time and memory:

1. connect: N producers connect and handshake;
2. idle: N connections held for a while with nothing logged;
3. light: every producer logs ``--rate`` scalars a second (a DataLoader worker timing its reads):
   small frames, the realistic case;
4. bulk: every producer logs ``--bulk`` scalars as fast as it can: big frames, the floor.

Then the figures are extrapolated to a job of nodes x ranks x workers. Run:

    python scripts/bench_remote.py --producers 256 --procs 4
    python scripts/bench_remote.py --producers 256 --procs 4 --transport unix   # a node-local hub
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rank0(conn: Connection, logdir: str, transport: str) -> None:
    """The hub process: answers each request with its CPU time, RSS and open fds."""
    import hyrax_tbhub
    from hyrax_tbhub._process.state import STATE

    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    hub = STATE.hub
    assert hub is not None
    if transport == "tcp":
        host, port = hub.listen_tcp("127.0.0.1")
        info = hub.info(f"tcp:{host}:{port}")
    else:
        info = hub.info()
    conn.send(json.dumps(asdict(info)))
    while True:
        cmd = conn.recv()
        if cmd == "close":
            start = time.monotonic()
            hyrax_tbhub.close_tensorboard_logger()
            conn.send({"close_s": time.monotonic() - start})
            return
        conn.send({"cpu": _cpu(), "rss": _rss(), "fds": len(os.listdir("/proc/self/fd"))})


def producers(conn: Connection, info_json: str, count: int) -> None:
    """One process holding ``count`` producers; runs the phases the driver asks for."""
    from hyrax_tbhub._discovery.hubfile import HubInfo
    from hyrax_tbhub._producer import Producer

    info = HubInfo(**json.loads(info_json))
    prods: list[Producer] = []
    frames = [0]  # frames sent before the phase being measured

    def sent_frames() -> int:
        return sum(p.frames_sent for p in prods)

    while True:
        cmd, arg = conn.recv()
        if cmd == "connect":
            frames[0] = sent_frames()
            for _ in range(count):
                p = Producer(info, lambda _p: None)
                p.start()
                prods.append(p)
            for p in prods:
                p.folder()  # waits for the hub's hello: connected and authenticated
            frames[0] = sent_frames()
            conn.send(sum(p.alive for p in prods))
        elif cmd == "light":
            rate, seconds = arg
            tick = 0.01
            per_tick = rate * tick  # events per producer per tick (fractional: accumulate)
            sent, owed, step = 0, 0.0, 0
            end = time.monotonic() + seconds
            next_tick = time.monotonic()
            while time.monotonic() < end:
                owed += per_tick
                n = int(owed)
                owed -= n
                wall = time.time()
                for p in prods:
                    for i in range(n):
                        p.put_scalar("data/read_s", 0.001, step + i, wall)
                sent += n * len(prods)
                step += n
                next_tick += tick
                time.sleep(max(0.0, next_tick - time.monotonic()))
            ok = all(p.flush(60) for p in prods)
            conn.send((sent, ok, sum(p.dropped for p in prods), sent_frames() - frames[0]))
            frames[0] = sent_frames()
        elif cmd == "bulk":
            wall = time.time()
            for p in prods:
                for s in range(arg):
                    p.put_scalar("bulk", 1.0, s, wall)
            ok = all(p.flush(120) for p in prods)
            conn.send((arg * len(prods), ok, sum(p.dropped for p in prods), sent_frames() - frames[0]))
            frames[0] = sent_frames()
        elif cmd == "close":
            for p in prods:
                p.close(30)
            conn.send(None)
            return


def _fit(rows: list[tuple[float, float, float]]) -> tuple[float, float]:
    """Least squares of cpu_us = a * frames + b * events (two unknowns, no intercept)."""
    sff = sum(f * f for f, _, _ in rows)
    see = sum(e * e for _, e, _ in rows)
    sfe = sum(f * e for f, e, _ in rows)
    sfc = sum(f * c for f, _, c in rows)
    sec = sum(e * c for _, e, c in rows)
    det = sff * see - sfe * sfe
    if det == 0:
        return 0.0, 0.0
    return (sfc * see - sec * sfe) / det, (sec * sff - sfc * sfe) / det


def _job(results: dict[str, Any], nodes: int, args: argparse.Namespace) -> dict[str, Any]:
    producers = nodes * args.ranks * (args.workers + 1)
    events = producers * args.job_rate
    frames = events / args.job_batch
    fit = results["fit_us"]
    return {
        "nodes": nodes, "ranks_per_node": args.ranks, "workers_per_rank": args.workers,
        "producers": producers, "events_per_s": events, "frames_per_s": frames,
        "rank0_fds": producers,
        "rank0_user_rss_mib": producers * results["rss_bytes_per_conn"] / 2**20,
        "rank0_connect_cpu_s": producers * results["connect_cpu_us_per_conn"] / 1e6,
        "rank0_cpu_cores": (frames * fit["per_frame"] + events * fit["per_event"]) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--producers", type=int, default=256, help="producers in all")
    parser.add_argument("--procs", type=int, default=4, help="processes the producers live in")
    parser.add_argument("--rates", type=lambda t: [float(x) for x in t.split(",")], default=[20.0, 200.0],
                        help="scalars/s per producer, one light phase each (comma-separated)")
    parser.add_argument("--job-rate", type=float, default=20.0, help="events/s per producer of the job")
    parser.add_argument("--job-batch", type=float, default=1.0, help="events per frame in the job")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the idle and light phases")
    parser.add_argument("--bulk", type=int, default=2000, help="scalars per producer, bulk phase")
    parser.add_argument("--transport", choices=["tcp", "unix"], default="tcp")
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--ranks", type=int, default=8, help="ranks per node")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers per rank")
    parser.add_argument("--logdir", default="")
    args = parser.parse_args()

    import tempfile

    logdir = args.logdir or tempfile.mkdtemp(prefix="bench_remote-")
    ctx = mp.get_context("spawn")
    hub_end, hub_conn = ctx.Pipe()
    hub_proc = ctx.Process(target=rank0, args=(hub_end, logdir, args.transport))
    hub_proc.start()
    info_json = hub_conn.recv()

    def sample() -> dict[str, Any]:
        hub_conn.send("sample")
        return hub_conn.recv()

    per_proc = [args.producers // args.procs + (i < args.producers % args.procs) for i in range(args.procs)]
    pipes, procs = [], []
    for n in per_proc:
        a, b = ctx.Pipe()
        p = ctx.Process(target=producers, args=(a, info_json, n))
        p.start()
        pipes.append(b)
        procs.append(p)

    def ask(cmd: str, arg: Any = None) -> list[Any]:
        for c in pipes:
            c.send((cmd, arg))
        return [c.recv() for c in pipes]

    n = args.producers
    results: dict[str, Any] = {"producers": n, "transport": args.transport, "cpus": os.cpu_count()}
    s0 = sample()
    alive = sum(ask("connect"))
    s1 = sample()
    results["connect_cpu_us_per_conn"] = (s1["cpu"] - s0["cpu"]) / n * 1e6
    results["rss_bytes_per_conn"] = (s1["rss"] - s0["rss"]) / n
    results["fds_per_conn"] = (s1["fds"] - s0["fds"]) / n
    results["connected"] = alive

    time.sleep(args.seconds)  # a benchmark's idle phase: the measured quantity is time itself
    s2 = sample()
    results["idle_cpu_pct"] = (s2["cpu"] - s1["cpu"]) / args.seconds * 100

    last = s2
    light_rows = []
    for rate in args.rates:
        light = ask("light", (rate, args.seconds))
        s3 = sample()
        events = sum(r[0] for r in light)
        frames = sum(r[3] for r in light)
        cpu = s3["cpu"] - last["cpu"]
        light_rows.append({
            "rate_per_producer": rate, "events": events, "frames": frames,
            "ok": all(r[1] for r in light), "dropped": sum(r[2] for r in light),
            "cpu_us_per_event": cpu / max(events, 1) * 1e6, "cpu_us_per_frame": cpu / max(frames, 1) * 1e6,
            "hub_cpu_pct": cpu / args.seconds * 100,
        })
        last = s3
    results["light"] = light_rows

    bulk = ask("bulk", args.bulk)
    s4 = sample()
    events = sum(r[0] for r in bulk)
    frames = sum(r[3] for r in bulk)
    cpu = s4["cpu"] - last["cpu"]
    results["bulk"] = {"events": events, "frames": frames, "ok": all(r[1] for r in bulk),
                       "cpu_us_per_event": cpu / max(events, 1) * 1e6}
    # rank 0's cost ~ per_frame * frames + per_event * events: fitted on every phase with load.
    rows = [(r["frames"], r["events"], r["cpu_us_per_event"] * r["events"]) for r in light_rows]
    rows.append((frames, events, results["bulk"]["cpu_us_per_event"] * events))
    per_frame, per_event = _fit(rows)
    results["fit_us"] = {"per_frame": per_frame, "per_event": per_event}

    ask("close")
    hub_conn.send("close")
    results["close_s"] = hub_conn.recv()["close_s"]
    for p in [*procs, hub_proc]:
        p.join(60)

    # Extrapolation: every producer of the job (workers and ranks) connected to rank 0, each
    # sending ``--job-rate`` events/s in frames of ``--job-batch`` events.
    results["job"] = [_job(results, nodes, args) for nodes in (args.nodes, 1000)]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
