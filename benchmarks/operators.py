"""Where a forward spends its time: the top operators of this package's model and transformers' with the same
weights, one table per family, as markdown (issue 26: "a profile table per family").

    python benchmarks/operators.py                    # r50, m2f_r50 at 512; eomt_s at 640; batch 1
    python benchmarks/operators.py --models m2f_r50 --rows 15

Each model runs as the bench times it (ours channels-last, transformers in its default memory order, both
float32 without autograd): one warm-up forward, then ``--forwards`` forwards under ``torch.profiler``; the
table lists the operators by self CPU time, with their share of the profiled time and their number of calls.
"""

from __future__ import annotations

import argparse

import torch
from bench import EOMT_SIZE, build_pair, cpu_model, family


def top_operators(fn, forwards: int) -> tuple[dict[str, tuple[float, int]], float]:
    """Self CPU milliseconds and calls per operator over ``forwards`` calls of ``fn``, and the total."""
    fn()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(forwards):
            fn()
    ops = {e.key: (e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages() if e.self_cpu_time_total > 0}
    return ops, sum(ms for ms, _ in ops.values())


def table(name: str, size: int, forwards: int, rows: int) -> str:
    """The markdown table of one benchmark model: ours and transformers' operators side by side."""
    ours, theirs = build_pair(name, torch.device("cpu"))
    ours.to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        mine, mine_total = top_operators(lambda: ours(x), forwards)
        ref, ref_total = top_operators(lambda: theirs(pixel_values=x), forwards)
    names = sorted(set(mine) | set(ref), key=lambda k: -max(mine.get(k, (0, 0))[0], ref.get(k, (0, 0))[0]))[:rows]
    lines = [
        f"{family(name)} `{name}` at {size} x {size}, batch 1, {forwards} forwards: ours {mine_total:.0f} ms, "
        f"transformers {ref_total:.0f} ms of operator self time",
        "",
        "| operator | ours ms | share | calls | transformers ms | share | calls |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in names:
        a, b = mine.get(key, (0.0, 0)), ref.get(key, (0.0, 0))
        lines.append(
            f"| `{key}` | {a[0]:.0f} | {100 * a[0] / mine_total:.0f}% | {a[1]} "
            f"| {b[0]:.0f} | {100 * b[0] / ref_total:.0f}% | {b[1]} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="r50,m2f_r50,eomt_s")
    parser.add_argument("--size", type=int, default=512, help="MaskFormer and Mask2Former input size")
    parser.add_argument("--forwards", type=int, default=3)
    parser.add_argument("--rows", type=int, default=10)
    args = parser.parse_args()
    print(f"device: {cpu_model()}; threads: {torch.get_num_threads()}; torch {torch.__version__}\n")
    for name in args.models.split(","):
        size = EOMT_SIZE if family(name) == "eomt" else args.size
        print(table(name, size, args.forwards, args.rows) + "\n")


if __name__ == "__main__":
    main()
