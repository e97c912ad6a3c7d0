"""Two forms of one convolution, on the same ``nn.Conv``-layout kernel, for populations.

Both compute, for ONE member, ``y[b, *o, f] = sum_{w, c} x_pad[b, *(o * stride + w), c]
* kernel[*w, c, f]`` on channels-last input ``x [B, *spatial, C]`` with a kernel
``[*window, C, F]``. They differ in what ``jax.vmap`` over members makes of them:

- ``conv_lax`` is ``lax.conv_general_dilated``, what ``nn.Conv`` runs. Under vmap,
  a kernel with a member axis turns it into one grouped convolution (a group per
  member), which XLA on CPU runs several times slower than the same FLOPs as matmuls.
- ``conv_einsum`` cuts the padded input into patches ``[B, *out, window * C]`` with
  strided slices (no kernel involved, so vmap only widens the batch) and contracts
  them with the kernel flattened to ``[window * C, F]``; vmap makes that contraction
  a batched matmul.

On CPU the einsum form was measured 7-10x faster (``benchmarks/conv_forms.py``:
MNIST-1D ConvBase, 8 members, batch 100, forward + backward + SGD, 2 cores: about
3,000-3,400 member-steps/s against 330-400 for the lax form). On an NVIDIA H200 the
einsum form was measured 8.4x faster at 8 members and 14x at 1,024 (jax 0.11.2:
97,000 against 11,500 and 515,000 against 37,000 member-steps/s;
``benchmarks/results/conv_forms-gpu-*.json``): cuDNN's grouped convolution with one
group per member is no faster than XLA's on CPU. So ``"auto"`` is the einsum form on
every backend; ``"lax"`` stays for checking and for a backend where it measures faster.

Padding is explicit ``(low, high)`` pairs per spatial axis, computed once by the
caller (``pads``), so both forms see identical geometry.
"""

import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("auto", "einsum", "lax")


def out_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
    """Output length of one spatial axis: ``floor((size + lo + hi - kernel) / stride) + 1``."""
    return (size + pad[0] + pad[1] - kernel) // stride + 1


def pads(padding, size: int, kernel: int, stride: int) -> tuple[int, int]:
    """``(low, high)`` padding of one axis from an int (symmetric), ``"same"`` or ``"valid"``.

    ``"same"`` gives ``ceil(size / stride)`` outputs with the extra pad on the high
    side, as ``lax.padtype_to_pads`` (and so ``nn.Conv``) does.
    """
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        return (total // 2, total - total // 2)
    return (int(padding), int(padding))


def resolve_impl(impl: str) -> str:
    """``"auto"`` -> ``"einsum"``: measured faster under vmap on CPU and on GPU (module docstring)."""
    return "einsum" if impl == "auto" else impl


def _dimension_numbers(n_spatial: int):
    spatial = "HW"[:n_spatial] if n_spatial <= 2 else "DHW"[-n_spatial:]
    return (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")


def conv_lax(x: jax.Array, kernel: jax.Array, strides, padding) -> jax.Array:
    """One member's convolution by ``lax.conv_general_dilated`` (as ``nn.Conv``).

    Args:
      x: ``[B, *spatial, C]``.
      kernel: ``[*window, C, F]``.
      strides: one int per spatial axis.
      padding: one ``(low, high)`` pair per spatial axis.
    Returns:
      ``[B, *out, F]``.
    """
    return lax.conv_general_dilated(x, kernel, tuple(strides), tuple(padding),
                                    dimension_numbers=_dimension_numbers(kernel.ndim - 2))


def patches(x: jax.Array, window, strides, padding) -> jax.Array:
    """Sliding windows of ``x [B, *spatial, C]`` as ``[B, *out, prod(window) * C]``.

    The last axis is ordered window-major, channel-minor, which is the row order of
    an ``nn.Conv`` kernel ``[*window, C, F]`` reshaped to ``[prod(window) * C, F]``.
    (``lax.conv_general_dilated_patches`` orders it channel-major and computes the
    patches as a grouped convolution; slicing needs no reordering and no convolution.)
    """
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    spatial = x.shape[1:-1]
    outs = [(n - w) // s + 1 for n, w, s in zip(spatial, window, strides)]
    views = []
    for offset in itertools.product(*(range(w) for w in window)):
        start = (0, *offset, 0)
        limit = (x.shape[0], *(o + (n - 1) * s + 1 for o, n, s in zip(offset, outs, strides)), x.shape[-1])
        views.append(lax.slice(x, start, limit, (1, *strides, 1)))
    stacked = jnp.stack(views, axis=-2)  # [B, *out, prod(window), C]
    return stacked.reshape(*stacked.shape[:-2], math.prod(window) * x.shape[-1])


def conv_einsum(x: jax.Array, kernel: jax.Array, strides, padding) -> jax.Array:
    """One member's convolution as patches times the flattened kernel; same arguments as ``conv_lax``."""
    window = kernel.shape[:-2]
    flat = kernel.reshape(-1, kernel.shape[-1])  # [prod(window) * C, F]
    return jnp.einsum("...p,pf->...f", patches(x, window, strides, padding), flat)


CONV_FORMS = {"einsum": conv_einsum, "lax": conv_lax}
