"""Every random stream a member draws from, each in its own namespace.

A member has three root keys, from its init, data and dropout seeds, and the
seeds are often equal (``study.seeds = N`` gives each member ``(s, s, s)``). A key
is therefore never ``fold_in(root, step)``: two purposes would share it (the batch
of step t and, before this module, the label noise at step 109,537, or the batch
and the dropout masks of every step). Each purpose folds in its own tag first,
then its index (the step, an example, a critic iteration):

    key(root, Stream.BATCH, step) = fold_in(fold_in(root, Stream.BATCH), step)

Keys of two purposes then differ for every pair of indices, whichever roots are
equal (``fold_in`` is a hash; tests check all steps below 10⁷). Adding a purpose is
one new member of ``Stream``; a user's task can draw its own from ``Stream.USER``.
"""

import enum

import jax


class Stream(enum.IntEnum):
    """The purposes a random key serves; the values are the tags folded in first."""

    INIT = 1  # model initialisation (root: init seed)
    BATCH = 2  # which training examples a step draws (root: data seed)
    AUGMENT = 3  # shifts, crops, flips and input noise of a step's batch (data seed)
    LABEL_NOISE = 4  # whether example i's label is replaced, and by what (data seed)
    DROPOUT = 5  # a step's dropout masks (dropout seed)
    LATENT = 6  # a GAN step's latent vectors (dropout seed)
    PENALTY = 7  # a GAN critic update's dropout and gradient-penalty draws (dropout seed)
    PROBE = 8  # a probe's own draws: directions, start vectors (a fixed root, or the data seed)
    USER = 9  # a user's task
    PBT = 10  # a population-based training round's choices (a fixed root from pbt.seed, by round)
    CLIENTS = 11  # which clients of a federation a round samples (a fixed root from federated.seed, by round)


def key(root: jax.Array, stream: Stream, index=0) -> jax.Array:
    """The key of ``stream``'s draw number ``index`` (a step, an example, ...) under ``root``.

    Args:
      root: a raw key (uint32 [2]), e.g. ``state.data_key``.
      stream: the purpose.
      index: int32 scalar (traced or not), e.g. ``state.step``.
    """
    return jax.random.fold_in(jax.random.fold_in(root, int(stream)), index)
