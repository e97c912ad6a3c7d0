"""One population over several processes: member-steps/s for 1 and 2 processes, same devices.

The study (the default MLP 40-100-100-10 on MNIST-1D, Adam, K members as seeds x a
learning-rate grid, probes and evaluation off) runs through the ``jaxdyn run`` command as
1 process with all D devices, and as P processes with D / P devices each joined by
``jax.distributed`` (``--distributed``, CPU collectives through gloo), which is what a
user runs across hosts. Each run's ``timing.csv`` gives its member-steps/s over its chunks
after the first (the first holds compiling and the first checkpoint); the runs are
interleaved (round-robin) and the best of ``--rounds`` kept, so that the ratio holds while
the machine drifts.

On CPU, D is one device per core (jaxdyn's default), split between the processes. On an
accelerator, each process gets D / P of the local devices (``CUDA_VISIBLE_DEVICES``); with
one device, there is nothing to split and only the one-process figure is written.

    python benchmarks/scaling.py [--members 64] [--steps 2000] [--chunk 250] [--processes 1,2]
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jaxdyn  # noqa: F401  (first: one XLA CPU device per core, as `jaxdyn run` has)
import pandas as pd

from timing import environment, write_result  # benchmarks/timing.py

STUDY = """
[study]
name = "scaling"
seeds = {seeds}

[model]
kind = "mlp"
hidden = [100, 100]

[optim]
name = "adam"

[train]
steps = {steps}
chunk_steps = {chunk}
log_every = {chunk}
batch_size = 100
eval_every = {chunks}
checkpoint_every = {chunks}

[probes.norms]
every = 0

[probes.activations]
every = 0

[grid]
"optim.learning_rate" = [1e-4, 1e-3, 1e-2, 1e-1]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_study(study: Path, processes: int, devices: int, platform: str, work: Path) -> dict:
    """Run ``study`` as ``processes`` processes over ``devices`` devices in all; its timing."""
    out = work / f"p{processes}-{time.monotonic_ns()}"
    port, procs = _free_port(), []
    per = devices // processes
    tic = time.perf_counter()
    for i in range(processes):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if platform == "cpu":
            env["JAXDYN_CPU_DEVICES"] = str(per)
        else:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i * per + d) for d in range(per))
        command = [sys.executable, "-m", "jaxdyn", "run", str(study), "--out", str(out), "--no-progress", "--no-report"]
        if processes > 1:
            command += ["--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes),
                        "--process-id", str(i)]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    outputs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - tic
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode]
    if failed:
        raise SystemExit(f"{processes} process(es): exit {failed}\n" + outputs[failed[0][0]][-3000:])
    timing = pd.read_csv(out / "timing.csv")
    steady = timing[timing.chunk > 1]
    return {"member_steps_per_s": float(steady.member_steps.sum() / steady.seconds.sum()), "wall_s": wall,
            "chunks_timed": int(len(steady))}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=64, help="K, a multiple of 4 (seeds x 4 learning rates)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=250)
    parser.add_argument("--processes", default="1,2", help="process counts to compare, each dividing the devices")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repeats; the best is kept")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    if args.members % 4 or args.steps % args.chunk:
        parser.error("--members must be a multiple of 4 and --steps a multiple of --chunk")
    env = environment()
    platform, devices = env["device"]["platform"], env["device"]["count"]
    counts = [int(p) for p in args.processes.split(",")]
    usable = [p for p in counts if devices % p == 0]
    skipped = sorted(set(counts) - set(usable))
    if skipped:
        print(f"skipping {skipped} process(es): {devices} device(s) do not split evenly")
    with tempfile.TemporaryDirectory(prefix="jaxdyn-scaling-") as tmp:
        work = Path(tmp)
        study = work / "study.toml"
        study.write_text(STUDY.format(seeds=args.members // 4, steps=args.steps, chunk=args.chunk,
                                      chunks=args.steps // args.chunk))
        best = {}
        for _ in range(args.rounds):
            for p in usable:
                result = run_study(study, p, devices, platform, work)
                print(f"{p} process(es) x {devices // p} device(s): {result['member_steps_per_s']:,.0f} "
                      f"member-steps/s ({result['wall_s']:.1f} s in all)", flush=True)
                if p not in best or result["member_steps_per_s"] > best[p]["member_steps_per_s"]:
                    best[p] = result
    base = best.get(1)
    rows = [{"processes": p, "devices_per_process": devices // p, **r,
             "ratio_to_one_process": (r["member_steps_per_s"] / base["member_steps_per_s"]) if base else None}
            for p, r in sorted(best.items())]
    result = {"benchmark": "scaling", **env,
              "config": {"members": args.members, "steps": args.steps, "chunk_steps": args.chunk,
                         "model": "mlp 40-100-100-10, adam, batch 100, mnist1d", "rounds": args.rounds,
                         "skipped_process_counts": skipped},
              "results": rows}
    write_result(args.out, "scaling", platform, result)
    return result


if __name__ == "__main__":
    main()
