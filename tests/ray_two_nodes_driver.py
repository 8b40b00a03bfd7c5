"""The driver of the two-node Ray test: ray.init first, then the hub, then tasks on each node.

``ray_two_nodes_driver.py <cluster address> <log folder> <events per node>``; prints a JSON line
with the hostname each task ran on.
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


def main() -> None:
    address, logdir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ray.init(address=address, log_to_driver=False)
    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    deadline = time.monotonic() + 180
    while True:  # the worker node joins the cluster on its own schedule: wait for it (bounded)
        nodes = sorted(node["NodeID"] for node in ray.nodes() if node["Alive"])
        if len(nodes) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    refs = []
    for k, node in enumerate(nodes):
        strategy = NodeAffinitySchedulingStrategy(node, soft=False)
        refs += [log_on_node.options(scheduling_strategy=strategy).remote(k * n + i) for i in range(n)]
    hosts = ray.get(refs, timeout=300)
    hyrax_tbhub.close_tensorboard_logger()
    print(json.dumps({"nodes": len(nodes), "hosts": sorted(set(hosts))}), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
