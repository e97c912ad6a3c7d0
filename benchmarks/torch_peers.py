"""The same population training in jaxdyn, in minimal JAX, and in three PyTorch forms.

Each variant trains K independent members with the same setup: the MLP 40-100-100-10
with ReLU (``mlp``) or the MNIST-1D ConvBase CNN (``cnn``: three Conv1d layers of 25
channels, kernels 5, 3, 3, stride 2, padding 1, ReLU, flattened into a linear head),
cross-entropy, Adam at learning rate 1e-3, and a batch of 100 drawn per step, for each
member separately, from the MNIST-1D training set held in memory as float32. For K from
``--sizes`` this times one chunk of ``--steps`` steps of every variant in interleaved
best-of rounds (``timing.best_times``):
  - jaxdyn: the real population chunk, as ``model_families.population_runner`` builds it
    (for ``cnn``, the convolution in jaxdyn's default form, ``conv_impl = "auto"``), for a
    study with the default probes off, since no other variant logs per-step update norms
    (``step_overhead.py`` times them too);
  - jax_minimal: ``step_overhead.minimal_runner``, the same flax model written by hand as
    ``jit(shard_map(vmap(scan(step))))``, without guard or metrics;
  - torch_eager_loop: K ``nn.Module`` models, each with its own ``torch.optim.Adam``,
    stepped one after another (the sequential loop a PyTorch user writes);
  - torch_func_vmap: ``torch.func`` ensembling: ``stack_module_state``, then
    ``torch.vmap`` of ``torch.func.grad_and_value`` of a ``functional_call``, and one
    ``torch.optim.Adam`` over the stacked tensors;
  - torch_fused: HFTA's horizontal fusion (Wang et al. 2021, "Horizontally Fused Training
    Array"): the K members' Linear layers as one batched matmul (weights ``[K, in, out]``,
    ``torch.baddbmm``), their Conv1d layers as one Conv1d with ``groups = K``, and one
    ``torch.optim.Adam`` over the fused tensors.
The three torch variants start from the same initial weights (LeCun normal, as jaxdyn's
default) and draw the same batches, so after the warm-up chunk their members' losses
must agree; the script asserts that, and that every variant's loss is finite and has
decreased. PyTorch runs eagerly (no ``torch.compile``), Adam at its defaults, with
``torch.set_num_threads`` at the number of cores this process may use (``--torch-threads``
to change it: on a CPU shared with other jobs, torch's threads at the full core count were
measured here 70-140x slower than one thread). Reported: member-steps/s of each variant
and its ratio to torch_eager_loop and to jaxdyn. Only ratios within one run are
meaningful; on a shared CPU, differences under about ±10 % are noise.

PyTorch is an optional extra (``pip install -e .[bench]``); without it the script says
so and exits without writing a result.

    python benchmarks/torch_peers.py [--sizes 8,32] [--steps 100] [--rounds 3] [--families mlp,cnn]
                                     [--torch-threads 0] [--torch-device auto]
"""

import argparse
import copy
import os
from pathlib import Path

import jaxdyn  # noqa: F401  (first: one XLA CPU device per core)

import jax
import numpy as np

from jaxdyn import population as pop
from jaxdyn.data import load_dataset
from model_families import CONVBASE, FAMILIES, cohort_for, population_runner  # noqa: E402  (benchmarks/)
from step_overhead import minimal_runner  # noqa: E402  (benchmarks/)
from timing import best_times, environment, write_result  # noqa: E402  (benchmarks/timing.py)

# The jaxdyn model of each family; the torch members below mirror it.
JAX_MODELS = {"mlp": FAMILIES["mlp"], "cnn": CONVBASE}
VARIANTS = ("jaxdyn", "jax_minimal", "torch_eager_loop", "torch_func_vmap", "torch_fused")
TORCH_VARIANTS = VARIANTS[2:]
BATCH, LR, EVAL_ROWS = 100, 1e-3, 1000
AGREE = 1e-2  # largest |loss difference| allowed between the torch variants after the warm-up chunk
MISSING = "torch_peers: PyTorch is not installed (pip install torch==2.13.0, or pip install -e .[bench]); skipped"


def torch_member(family: str, n_in: int, n_out: int):
    """One member as ``nn.Sequential`` taking ``x [B, n_in]``, initialised as jaxdyn's default:
    LeCun normal kernels (truncated normal, variance 1/fan_in) and zero biases."""
    import torch
    from torch import nn

    if family == "mlp":
        widths = (n_in, *FAMILIES["mlp"]["hidden"], n_out)
        layers = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        net = nn.Sequential(*layers[:-1])
    else:
        c = CONVBASE
        layers, channels, length = [nn.Unflatten(1, (1, n_in))], 1, n_in
        for width, k, s, p in zip(c["channels"], c["kernels"], c["strides"], c["padding"]):
            layers += [nn.Conv1d(channels, width, k, stride=s, padding=p), nn.ReLU()]
            channels, length = width, (length + 2 * p - k) // s + 1
        net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * length, n_out))
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                std = (1.0 / m.weight[0].numel()) ** 0.5 / 0.87962566103423978  # flax's truncation factor
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
                nn.init.zeros_(m.bias)
    return net


class Sampler:
    """Each member's own batch each step: ``draw() -> (x [K, B, F], y [K, B])`` from in-memory tensors."""

    def __init__(self, x, y, k: int, seed: int):
        import torch

        self.x, self.y, self.k = x, y, k
        self.gen = torch.Generator(device=x.device).manual_seed(seed)

    def draw(self):
        import torch

        idx = torch.randint(0, self.x.shape[0], (self.k, BATCH), generator=self.gen, device=self.x.device)
        return self.x[idx], self.y[idx]


def eager_loop(members, sampler):
    """K models and K Adams, stepped one after another. Returns ``(step, eval_losses)``."""
    import torch
    import torch.nn.functional as F

    models = [copy.deepcopy(m) for m in members]
    opts = [torch.optim.Adam(m.parameters(), lr=LR) for m in models]

    def step():
        xb, yb = sampler.draw()
        for i, (model, opt) in enumerate(zip(models, opts)):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb[i]), yb[i]).backward()
            opt.step()

    def losses(x, y):
        with torch.no_grad():
            return torch.stack([F.cross_entropy(m(x), y) for m in models])

    return step, losses


def func_vmap(members, sampler):
    """torch.func ensembling: stacked parameters, vmap of grad over members, one Adam."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad_and_value, stack_module_state

    params, buffers = stack_module_state([copy.deepcopy(m) for m in members])
    base = copy.deepcopy(members[0]).to("meta")

    def member_loss(p, b, x, y):
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    grads_of = torch.vmap(grad_and_value(member_loss))
    # Adam is elementwise (its moments and update are per parameter entry, and every member
    # takes the same step count), so one torch.optim.Adam over the stacked [K, ...] tensors
    # is exactly K independent Adams, one per member.
    opt = torch.optim.Adam(params.values(), lr=LR)

    def step():
        xb, yb = sampler.draw()
        grads, _ = grads_of(params, buffers, xb, yb)
        for name, p in params.items():
            p.grad = grads[name]
        opt.step()

    def losses(x, y):
        with torch.no_grad():
            return torch.vmap(member_loss, in_dims=(0, 0, None, None))(params, buffers, x, y)

    return step, losses


class Fused:
    """HFTA-style fusion of K ``torch_member`` networks: Linear -> baddbmm on ``[K, in, out]``
    weights, Conv1d -> one Conv1d with ``groups = K`` (channels member-major)."""

    def __init__(self, members):
        import torch
        from torch import nn

        self.k, self.plan, self.tensors = len(members), [], []
        with torch.no_grad():
            for layer in zip(*members):
                first = layer[0]
                if isinstance(first, nn.Linear):
                    w = torch.stack([m.weight.t() for m in layer]).contiguous()  # [K, in, out]
                    b = torch.stack([m.bias for m in layer]).unsqueeze(1)  # [K, 1, out]
                    self.plan.append(("linear", w.requires_grad_(), b.requires_grad_()))
                elif isinstance(first, nn.Conv1d):
                    w = torch.cat([m.weight for m in layer]).contiguous()  # [K·C_out, C_in, k]
                    b = torch.cat([m.bias for m in layer])
                    self.plan.append(("conv", w.requires_grad_(), b.requires_grad_(),
                                      first.stride[0], first.padding[0]))
                elif isinstance(first, nn.Unflatten):
                    self.plan.append(("channels",))
                elif isinstance(first, nn.Flatten):
                    self.plan.append(("flatten",))
                elif isinstance(first, nn.ReLU):
                    self.plan.append(("relu",))
                else:
                    raise TypeError(f"no fused form of {type(first).__name__}")
                self.tensors += [t for t in self.plan[-1][1:3] if isinstance(t, torch.Tensor)]

    def __call__(self, x):
        """``x [K, B, F]`` -> logits ``[K, B, n_out]``."""
        import torch
        import torch.nn.functional as F

        for op, *args in self.plan:
            if op == "linear":
                x = torch.baddbmm(args[1], x, args[0])
            elif op == "conv":
                x = F.conv1d(x, args[0], args[1], stride=args[2], padding=args[3], groups=self.k)
            elif op == "channels":  # [K, B, L] -> [B, K, L]: member k's example is channel k
                x = x.transpose(0, 1)
            elif op == "flatten":  # [B, K·C, L] -> [K, B, C·L], each member's channels-major flatten
                x = x.reshape(x.shape[0], self.k, -1).transpose(0, 1)
            else:
                x = torch.relu(x)
        return x


def fused(members, sampler):
    """One fused network, one Adam over its ``[K, ...]`` tensors (K independent Adams, as above)."""
    import torch
    import torch.nn.functional as F

    net = Fused([copy.deepcopy(m) for m in members])
    opt = torch.optim.Adam(net.tensors, lr=LR)

    def step():
        xb, yb = sampler.draw()
        opt.zero_grad(set_to_none=True)
        logits = net(xb)
        # The sum of the members' mean losses: each member's gradient is that of its own mean loss.
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1), reduction="sum") / BATCH
        loss.backward()
        opt.step()

    def losses(x, y):
        with torch.no_grad():
            logits = net(x.expand(net.k, *x.shape))
            n = logits.shape[-1]
            return F.cross_entropy(logits.reshape(-1, n), y.repeat(net.k), reduction="none").view(net.k, -1).mean(1)

    return step, losses


BUILDERS = {"torch_eager_loop": eager_loop, "torch_func_vmap": func_vmap, "torch_fused": fused}


def torch_runners(family: str, k: int, steps: int, x, y, seed: int = 0):
    """Warmed-up runners of one chunk of each torch variant, and the check's record.

    Every variant starts from the same K members and draws the same batches; one
    chunk each (the warm-up) must leave finite, lower losses that agree across variants."""
    import torch

    torch.manual_seed(seed)
    members = [torch_member(family, x.shape[1], int(y.max()) + 1).to(x.device) for _ in range(k)]
    ex, ey = x[:EVAL_ROWS], y[:EVAL_ROWS]
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    runners, check = {}, {}
    for name in TORCH_VARIANTS:
        step, losses = BUILDERS[name](members, Sampler(x, y, k, seed + 1))

        def one(step=step):
            for _ in range(steps):
                step()
            sync()

        before = losses(ex, ey)
        one()  # warm up, and the check's training
        after = losses(ex, ey)
        assert torch.isfinite(after).all(), f"{family} K={k} {name}: non-finite loss after {steps} steps"
        assert after.mean() < before.mean(), (f"{family} K={k} {name}: mean loss did not decrease in {steps} "
                                              f"steps ({before.mean():.4f} -> {after.mean():.4f})")
        runners[name] = one
        check[name] = {"loss_before": float(before.mean()), "loss_after": float(after.mean()), "_after": after}
    ref = check["torch_eager_loop"].pop("_after")
    for name in TORCH_VARIANTS[1:]:
        gap = float((check[name].pop("_after") - ref).abs().max())
        check[name]["max_loss_gap_vs_eager"] = gap
        assert gap < AGREE, f"{family} K={k} {name}: members' losses differ from torch_eager_loop's by {gap:.2e}"
    return runners, check


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8,32", help="members K, comma-separated")
    parser.add_argument("--steps", type=int, default=100, help="steps per timed chunk")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--families", default="mlp,cnn", help=f"from {','.join(JAX_MODELS)}")
    parser.add_argument("--torch-device", default="auto",
                        help="cpu | cuda | auto (cuda where JAX runs on a GPU and torch sees one)")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch.set_num_threads; 0 = the cores this process may use. On a machine "
                             "shared with other jobs, fewer threads than cores can be many times faster")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print(MISSING)
        return None

    platform = jax.devices()[0].platform
    device = args.torch_device
    if device == "auto":
        device = "cuda" if platform == "gpu" and torch.cuda.is_available() else "cpu"
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(args.torch_threads or cores)
    print(f"torch {torch.__version__} on {device}, {torch.get_num_threads()} threads; jax on {platform}", flush=True)

    host = load_dataset("mnist1d")
    mesh = pop.make_mesh()
    data = pop.replicate(host, mesh)
    tx = torch.as_tensor(np.asarray(host.x_train, np.float32).reshape(len(host.x_train), -1), device=device)
    ty = torch.as_tensor(np.asarray(host.y_train, np.int64), device=device)
    sizes = [int(s) for s in args.sizes.split(",")]
    families = [f for f in args.families.split(",") if f]
    runners, checks = {}, {}
    for family in families:
        for k in sizes:
            cohort = cohort_for(JAX_MODELS[family], k, probes=False)
            runners[f"{family}_K{k}_jaxdyn"] = population_runner(cohort, data, mesh, args.steps)
            runners[f"{family}_K{k}_jax_minimal"] = minimal_runner(cohort, data, mesh, args.steps)
            peers, checks[(family, k)] = torch_runners(family, k, args.steps, tx, ty)
            runners.update({f"{family}_K{k}_{v}": fn for v, fn in peers.items()})
            gaps = ", ".join(f"{v} {c['max_loss_gap_vs_eager']:.1e}" for v, c in checks[(family, k)].items()
                             if "max_loss_gap_vs_eager" in c)
            print(f"ready {family} K={k} (torch losses agree with the eager loop: {gaps})", flush=True)
    best = best_times(runners, args.rounds)

    rows = []
    print(f"\n{'family':<6} {'K':>4}  {'variant':<17} {'member-steps/s':>14}  {'/eager_loop':>11}  {'/jaxdyn':>8}")
    for family in families:
        for k in sizes:
            rate = {v: k * args.steps / best[f"{family}_K{k}_{v}"] for v in VARIANTS}
            rows.append({"family": family, "members": k, "member_steps_per_s": rate,
                         "best_seconds": {v: best[f"{family}_K{k}_{v}"] for v in VARIANTS},
                         "vs_torch_eager_loop": {v: rate[v] / rate["torch_eager_loop"] for v in VARIANTS},
                         "vs_jaxdyn": {v: rate[v] / rate["jaxdyn"] for v in VARIANTS},
                         "torch_check": checks[(family, k)]})
            for v in VARIANTS:
                print(f"{family:<6} {k:>4}  {v:<17} {rate[v]:>14.0f}  {rate[v] / rate['torch_eager_loop']:>11.2f}  "
                      f"{rate[v] / rate['jaxdyn']:>8.2f}")
    env = environment()
    env["versions"].update(jaxdyn=jaxdyn.__version__, torch=torch.__version__)
    result = {
        "benchmark": "torch_peers",
        **env,
        "torch": {"device": device, "threads": torch.get_num_threads(), "cores": cores, "compile": False,
                  "optimizer": "torch.optim.Adam(lr=1e-3), other arguments at their defaults"},
        "steps": args.steps, "batch": BATCH, "learning_rate": LR, "rounds": args.rounds,
        "models": {f: JAX_MODELS[f] for f in families},
        "method": "every runner built and warmed up first (one chunk), then timed in interleaved rounds; best of "
                  "rounds. Rates are member-steps/s (K * steps / seconds of one chunk); vs_X = rate / X's rate. "
                  "Each member draws its own batch of 100 per step. torch_check: mean loss over members on "
                  f"{EVAL_ROWS} training rows before and after the warm-up chunk, and the largest difference "
                  "of a member's loss from torch_eager_loop's (same initial weights and batches).",
        "results": rows,
    }
    write_result(args.out, "torch_peers", platform, result)
    return result


if __name__ == "__main__":
    main()
