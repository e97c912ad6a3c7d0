"""Every benchmark in one command, on whatever backend JAX finds: one JSON per benchmark.

Each benchmark runs as its own process (a crash or a hang in one costs only that one),
with the arguments of the plan for the backend: the CPU plan is each script's defaults;
on a GPU or TPU the populations grow to K = 4,096 (member groups = every member of a
device, the accelerator default) and the CNN and attention forms are measured at K = 1,024
as well as 8, so ``conv_impl = "auto"`` can be checked against a measurement there. A
benchmark that outlives its share of ``--budget`` is stopped and recorded as such.

Writes the benchmarks' own JSON files into ``--out`` and ``run_all-<platform>-<time>.json``
beside them: for every benchmark its arguments, exit status, seconds and the file it wrote.

    python benchmarks/run_all.py [--only conv_forms,attention_forms] [--budget 3600] [--quick]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).parent

# name -> (share of the budget, arguments). The order is the order they run in.
PLANS = {
    "cpu": {
        "population_throughput": (3, []),
        "model_families": (3, []),
        "conv_forms": (1, []),
        "attention_forms": (1, []),
        "rnn_speed": (1, []),
        "probe_overhead": (2, []),
        "pbt_overhead": (2, []),
        "federated_scale": (3, []),
        "step_overhead": (3, []),
        "scaling": (2, []),
        "torch_peers": (2, ["--families", "mlp,cnn"]),
    },
    "accelerator": {
        "population_throughput": (4, ["--sizes", "1,8,32,128,1024,4096", "--groups", "256,1024,all"]),
        # second, and the MLP alone: is the gap to 200x a sequential loop at K = 1,024 jaxdyn's own
        # overhead or the ceiling of a vmapped population of this model on the chip? The minimal
        # hand-written population answers it (the 2026-11-30 GPU run spent its budget before this).
        "step_overhead": (3, ["--families", "mlp", "--sizes", "8,1024", "--attribute-sizes", "1024",
                              "--chunk", "500"]),
        "federated_scale": (3, ["--clients", "10,100,1000,10000", "--loop-clients", "1000"]),
        "conv_forms": (1, ["--members", "1024", "--steps", "20"]),
        "model_families": (4, ["--sizes", "8,1024"]),
        "attention_forms": (2, ["--members", "256", "--steps", "10", "--rounds", "2"]),
        "probe_overhead": (3, ["--members", "1024"]),
        "rnn_speed": (2, ["--members", "1024"]),
        "pbt_overhead": (2, []),
        "scaling": (2, ["--members", "4096", "--steps", "2000", "--chunk", "500"]),
        "torch_peers": (2, ["--sizes", "8,1024", "--families", "mlp,cnn"]),
    },
}
# --quick: the smallest run of each that still exercises its code (a smoke test, not a measurement)
QUICK = {
    "population_throughput": ["--quick", "--sizes", "1,8", "--groups", "all", "--rounds", "1"],
    "model_families": ["--sizes", "8", "--chunk", "10", "--rounds", "1", "--families", "mlp"],
    "conv_forms": ["--steps", "5", "--rounds", "1"],
    "attention_forms": ["--steps", "5", "--rounds", "1"],
    "rnn_speed": ["--steps", "2", "--rounds", "1"],
    "probe_overhead": ["--members", "8", "--chunk", "100", "--rounds", "1", "--models", "mlp"],
    "pbt_overhead": ["--members", "8", "--chunks", "100", "--rounds", "1", "--repeats", "2"],
    "federated_scale": ["--clients", "10", "--repeats", "1", "--rounds-per-chunk", "2"],
    "step_overhead": ["--sizes", "8", "--chunk", "10", "--rounds", "1", "--families", "mlp",
                      "--variants", "minimal,+guard"],
    "scaling": ["--members", "8", "--steps", "40", "--chunk", "10", "--rounds", "1"],
    "torch_peers": ["--sizes", "2", "--steps", "5", "--rounds", "1", "--families", "mlp,cnn"],
}


def backend() -> str:
    """The platform JAX picks here, asked in a child process, so that this one never holds the
    accelerator while the benchmarks run."""
    code = "import jax; print(jax.default_backend())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1]


def run_one(name: str, args: list, out: Path, timeout: float) -> dict:
    """Run ``benchmarks/<name>.py args --out out``, echoing its output; return its record."""
    cmd = [sys.executable, str(HERE / f"{name}.py"), *args, "--out", str(out)]
    print(f"\n=== {name} {' '.join(args)} (at most {timeout:.0f} s)", flush=True)
    tic = time.perf_counter()
    lines, status = [], "ok"
    path = os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))
    env = os.environ | {"PYTHONUNBUFFERED": "1", "PYTHONPATH": path}  # this checkout's jaxdyn
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)

    def echo():
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:  # a hang prints nothing: the wait, not the output, keeps time
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        status = "stopped at its time limit"
    reader.join(timeout=10)
    rc = proc.returncode
    if status == "ok" and rc != 0:
        status = f"failed (exit {rc})"
    wrote = [ln.split("wrote ", 1)[1] for ln in lines if ln.startswith("wrote ")]
    return {"benchmark": name, "args": args, "status": status, "exit_code": rc,
            "seconds": round(time.perf_counter() - tic, 1), "wrote": wrote,
            "last_lines": lines[-5:] if status != "ok" else []}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--budget", type=float, default=3600.0, help="seconds for all of them together")
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (not measurements)")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    platform = backend()
    plan = PLANS["cpu" if platform == "cpu" else "accelerator"]
    names = [n for n in args.only.split(",") if n] or list(plan)
    unknown = sorted(set(names) - set(plan))
    if unknown:
        parser.error(f"--only: no benchmark named {', '.join(unknown)}; choose from {', '.join(plan)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records, start = [], time.perf_counter()
    for i, name in enumerate(names):
        left = args.budget - (time.perf_counter() - start)
        shares = sum(plan[n][0] for n in names[i:])
        timeout = left * plan[name][0] / shares
        records.append(run_one(name, QUICK[name] if args.quick else plan[name][1], out, timeout))
    summary = {"platform": platform, "quick": args.quick, "budget_s": args.budget,
               "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "benchmarks": records}
    path = out / f"run_all-{platform}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(summary, indent=2))
    print("\n" + "\n".join(f"{r['benchmark']:<22} {r['status']:<28} {r['seconds']:7.1f} s" for r in records))
    print(f"wrote {path}")
    return summary


if __name__ == "__main__":
    main()
