"""The driver of the two-node Ray test: tasks on each node log to the driver's hub.

``ray_two_nodes_driver.py <cluster address> <folder> <events per node>``. Two jobs, one after
the other: ``ray.init()`` first then the hub (log ``<folder>/ray_first``), and the hub first then
``ray.init()`` (log ``<folder>/hub_first``). Prints one JSON line per job: the number of nodes
and the hostnames the tasks ran on.
"""

from __future__ import annotations

import json
import socket
import sys
import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import hyrax_tbhub


@ray.remote(num_cpus=1)
def log_on_node(i: int) -> str:
    hyrax_tbhub.get_tensorboard_logger().add_scalar("ray/node", float(i), i)
    return socket.gethostname()


def _alive_nodes() -> list[str]:
    deadline = time.monotonic() + 180
    while True:  # the worker node joins the cluster on its own schedule: wait for it (bounded)
        nodes = sorted(node["NodeID"] for node in ray.nodes() if node["Alive"])
        if len(nodes) >= 2 or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def job(address: str, logdir: str, n: int, ray_first: bool) -> None:
    if ray_first:
        ray.init(address=address, log_to_driver=False)
        hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    else:
        hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
        ray.init(address=address, log_to_driver=False)
    nodes = _alive_nodes()
    refs = []
    for k, node in enumerate(nodes):
        strategy = NodeAffinitySchedulingStrategy(node, soft=False)
        refs += [log_on_node.options(scheduling_strategy=strategy).remote(k * n + i) for i in range(n)]
    hosts = ray.get(refs, timeout=300)
    hyrax_tbhub.close_tensorboard_logger()
    ray.shutdown()
    print(json.dumps({"ray_first": ray_first, "nodes": len(nodes), "hosts": sorted(set(hosts))}),
          flush=True)


def main() -> None:
    address, folder, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    job(address, f"{folder}/ray_first", n, True)
    job(address, f"{folder}/hub_first", n, False)


if __name__ == "__main__":
    main()
