"""Load test of ``maskformer serve`` on loopback: N concurrent clients, throughput and p50 / p99 latency with
batching off and on, the server's memory before and after 1000 requests, and whether any request that found
room in the queue went unanswered.

    python benchmarks/serve_load.py                       # the demo's Mask2Former (random weights), ~5 min on 2 cores
    python benchmarks/serve_load.py --model PATH --requests 200 --memory-requests 1000

Each configuration runs ``maskformer serve`` in its own process (as users run it), warmed up by
``--warmup`` requests; clients are threads of this process holding keep-alive connections, each sending the
next request as soon as its last is answered. Images are synthetic scenes of one size (so that the batched
forward can group them). Modes:

- ``off``: ``--max-batch 1``, one request per forward;
- ``on``: ``--max-batch 8``; the model's default ``batch_invariant`` forwards the batch's images one at a
  time, so that every answer equals the image's answer alone (what the server promises);
- ``on, batched forward``: ``--max-batch 8`` on the same weights with ``inference.batch_invariant: false``
  (images of one padded size share one forward; answers may differ from alone by float rounding).

Memory is the server process's resident set (VmRSS, Linux) after the warm-up and after each further
``--memory-requests`` requests at the highest client count with batching on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from maskformer.data.io import encode_png
from maskformer.data.synth import render
from maskformer.demo import demo_config
from maskformer.model import MaskFormer, ModelConfig

ROOT = Path(__file__).resolve().parent


def scenes(count: int, size: tuple[int, int]) -> list[bytes]:
    """``count`` synthetic scenes of exactly ``size`` (H, W) as PNG bytes."""
    out = []
    for seed in range(count):
        image = render(np.random.default_rng(seed), (max(size), max(size)))[0][: size[0], : size[1]]
        out.append(encode_png(np.ascontiguousarray(image)))
    return out


def demo_model(folder: Path) -> Path:
    """The demo's Mask2Former (ResNet-18, 6 classes, test size 128) with random weights."""
    torch.manual_seed(0)
    MaskFormer(demo_config(folder, steps=1).model).save_pretrained(folder)
    return folder


def batched_forward_copy(model: Path, folder: Path) -> Path:
    """A copy of a saved model folder whose config forwards same-size images in one batch."""
    folder.mkdir(parents=True, exist_ok=True)
    config = ModelConfig.from_yaml(model / "config.yaml")
    config.inference = dataclasses.replace(config.inference, batch_invariant=False)
    config.to_yaml(folder / "config.yaml")
    (folder / "model.safetensors").symlink_to((model / "model.safetensors").resolve())
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Server:
    """``maskformer serve`` in a subprocess on a free loopback port."""

    def __init__(self, model: Path, max_batch: int, max_queue: int, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("w")
        command = [sys.executable, "-m", "maskformer.cli.main", "serve", "--model", str(model), "--port",
                   str(self.port), "--max-batch", str(max_batch), "--max-queue", str(max_queue)]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"the server did not start; see {log}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


def load(url: str, images: list[bytes], clients: int, requests: int, task: str) -> dict:
    """``requests`` POST /predict from ``clients`` threads; latencies of the answered ones, statuses."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        with httpx.Client(timeout=120) as session:
            for i in counter:
                started = time.perf_counter()
                r = session.post(f"{url}/predict", params={"task": task}, content=images[i % len(images)])
                took = time.perf_counter() - started
                with lock:
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        latencies.append(took)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "requests": requests,
        "answered": statuses.get(200, 0),
        "statuses": statuses,
        "wall_s": wall,
        "throughput_rps": statuses.get(200, 0) / wall,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved model folder (default: the demo's Mask2Former, random weights)")
    parser.add_argument("--clients", default="1,8", help="comma-separated concurrent client counts")
    parser.add_argument("--requests", type=int, default=160, help="requests per (mode, client count)")
    parser.add_argument("--memory-requests", type=int, default=1000)
    parser.add_argument("--memory-rounds", type=int, default=2, help="rounds of --memory-requests requests")
    parser.add_argument("--modes", default="off,on,on+batched forward",
                        help="comma-separated: off, on, on+batched forward")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--task", default="panoptic", choices=["semantic", "panoptic", "instance"])
    parser.add_argument("--size", default="240,320", help="image height,width")
    parser.add_argument("--out", default=str(ROOT / "serve_results.json"))
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    height, width = (int(v) for v in args.size.split(","))
    images = scenes(4, (height, width))
    work = Path(tempfile.mkdtemp(prefix="serve_load_"))
    model = Path(args.model) if args.model else demo_model(work / "model")
    modes = {
        "off": (model, 1),
        "on": (model, 8),
        "on, batched forward": (batched_forward_copy(model, work / "batched"), 8),
    }
    rows, memory = [], {}
    chosen = [m.replace("+", ", ") for m in args.modes.split(",")]
    unknown = sorted(set(chosen) - set(modes))
    if unknown:
        parser.error(f"unknown modes {unknown}")
    for mode, (folder, max_batch) in modes.items():
        if mode not in chosen:
            continue
        # Room for every client's request: nothing may be refused.
        server = Server(folder, max_batch, max_queue=max(64, max(clients)), log=work / f"{mode}.log")
        try:
            load(server.url, images, 1, args.warmup, args.task)
            for n in clients:
                row = {"mode": mode, "max_batch": max_batch, **load(server.url, images, n, args.requests, args.task)}
                rows.append(row)
                rate, p50, p99 = row["throughput_rps"], row["p50_ms"], row["p99_ms"]
                print(f"{mode:<22} clients {n:>3}: {rate:.2f} req/s, p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
                      f"answered {row['answered']}/{row['requests']}", flush=True)  # fmt: skip
            if mode == "on":
                before = rss_mib(server.proc.pid)
                trace = [before]
                for _ in range(args.memory_rounds):
                    load(server.url, images, max(clients), args.memory_requests, args.task)
                    trace.append(rss_mib(server.proc.pid))
                memory = {"requests_per_step": args.memory_requests, "clients": max(clients), "rss_mib": trace}
                print(f"memory (RSS MiB) after warm-up and after each {args.memory_requests} requests: "
                      + ", ".join(f"{v:.1f}" for v in trace), flush=True)  # fmt: skip
        finally:
            server.stop()
    result = {
        "machine": {"cpu": platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__},
        "task": args.task,
        "image_size": [height, width],
        "rows": rows,
        "memory": memory,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print()
    print("| mode | max batch | clients | requests | answered | throughput (req/s) | p50 (ms) | p99 (ms) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['max_batch']} | {r['clients']} | {r['requests']} | {r['answered']} | "
              f"{r['throughput_rps']:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |")  # fmt: skip
    if memory:
        trace = memory["rss_mib"]
        steps = ", ".join(f"{v:.1f} after {(i + 1) * memory['requests_per_step']}" for i, v in enumerate(trace[1:]))
        print(f"\nserver RSS (MiB): {trace[0]:.1f} after the warm-up, {steps} requests")


if __name__ == "__main__":
    main()
