"""Where a forward spends its time: the top operators of this package's model and transformers' with the same
weights, one table per family, as markdown (issue 26: "a profile table per family").

    python benchmarks/operators.py                    # r50, m2f_r50 at 512; eomt_s at 640; batch 1
    python benchmarks/operators.py --models m2f_r50 --rows 15
    python benchmarks/operators.py --models m2f_swin_t --train   # training steps instead of forwards

Each model runs as the bench times it (ours channels-last, transformers in its default memory order, both
float32 without autograd): one warm-up forward, then ``--forwards`` forwards under ``torch.profiler``; the
table lists the operators by self CPU time, with their share of the profiled time and their number of calls.
With ``--train``, each run is the bench's training step instead (batch 2: forward, matching, the loss with deep
supervision, backward, AdamW).
"""

from __future__ import annotations

import argparse

import torch
from bench import EOMT_SIZE, build_pair, cpu_model, family, their_loss, timed_adamw, training_targets

from maskformer.model import SetCriterion


def top_operators(fn, forwards: int) -> tuple[dict[str, tuple[float, int]], float]:
    """Self CPU milliseconds and calls per operator over ``forwards`` calls of ``fn``, and the total."""
    fn()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(forwards):
            fn()
    ops = {e.key: (e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages() if e.self_cpu_time_total > 0}
    return ops, sum(ms for ms, _ in ops.values())


def table(name: str, size: int, forwards: int, rows: int, train: bool = False) -> str:
    """The markdown table of one benchmark model: ours and transformers' operators side by side."""
    ours, theirs = build_pair(name, torch.device("cpu"))
    ours.to(memory_format=torch.channels_last)
    if train:
        mine, mine_total, ref, ref_total = _training_steps(ours, theirs, size, forwards)
        what = f"batch 2, {forwards} training steps"
    else:
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            mine, mine_total = top_operators(lambda: ours(x), forwards)
            ref, ref_total = top_operators(lambda: theirs(pixel_values=x), forwards)
        what = f"batch 1, {forwards} forwards"
    names = sorted(set(mine) | set(ref), key=lambda k: -max(mine.get(k, (0, 0))[0], ref.get(k, (0, 0))[0]))[:rows]
    lines = [
        f"{family(name)} `{name}` at {size} x {size}, {what}: ours {mine_total:.0f} ms, "
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


def _training_steps(ours, theirs, size: int, steps: int) -> tuple[dict, float, dict, float]:
    """Operators of ``steps`` training steps of each implementation, as the bench times them."""
    x = torch.randn(2, 3, size, size)
    targets = training_targets(2, size, torch.device("cpu"))
    criterion = SetCriterion.from_config(ours.config)
    profiles = []
    for model in (ours, theirs):
        model.train()
        opt = timed_adamw(model)

        def step(model=model, opt=opt) -> None:
            opt.zero_grad(set_to_none=True)
            if model is ours:
                loss = sum(criterion(ours(x), targets).values())
            else:
                loss = their_loss(theirs, x, [t["masks"] for t in targets], [t["labels"] for t in targets])
            loss.backward()
            opt.step()

        profiles.append(top_operators(step, steps))
        model.zero_grad(set_to_none=True)  # one implementation's gradients at a time
        del opt
    (mine, mine_total), (ref, ref_total) = profiles
    return mine, mine_total, ref, ref_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="r50,m2f_r50,eomt_s")
    parser.add_argument("--size", type=int, default=512, help="MaskFormer and Mask2Former input size")
    parser.add_argument("--forwards", type=int, default=3, help="forwards (or training steps) profiled")
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--train", action="store_true", help="profile training steps (batch 2) instead of forwards")
    args = parser.parse_args()
    print(f"device: {cpu_model()}; threads: {torch.get_num_threads()}; torch {torch.__version__}\n")
    for name in args.models.split(","):
        size = EOMT_SIZE if family(name) == "eomt" else args.size
        print(table(name, size, args.forwards, args.rows, args.train) + "\n")


if __name__ == "__main__":
    main()
