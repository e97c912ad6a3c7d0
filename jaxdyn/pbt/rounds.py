"""PBT rounds of one cohort on the host side: when they are due, the scores they rank, their key,
and the lineage rows they leave (``lineage.parquet``).

A round itself is ``round.pbt_round``, one jitted function of the stacked population state:
a gather along the member axis and a few elementwise operations, with the state's
sharding kept so the next chunk does not recompile.
"""

from functools import partial

import jax
import numpy as np
import pandas as pd

from jaxdyn import distributed, streams
from jaxdyn.pbt.config import explorable, explore_range
from jaxdyn.pbt.round import PBTRoundOptions, pbt_round
from jaxdyn.streams import Stream


class CohortPBT:
    """The PBT rounds of one cohort (``cohort.config.pbt`` set).

    Args:
      cohort: a ``study.Cohort``; its member order is the population's (padding after it).
      n_padded: members in the population, padding included.
    """

    def __init__(self, cohort, n_padded: int):
        self.cfg = cfg = cohort.config.pbt
        decls = explorable(cohort.config)
        self.names = tuple(h.split(".", 1)[1] for h in cfg.hparams)  # as in MemberState.hparams
        ranges = tuple(explore_range(h, decls[h], cfg) for h in cfg.hparams)
        self.options = PBTRoundOptions(
            exploit=cfg.exploit, fraction=cfg.fraction, explore=cfg.explore, factors=tuple(cfg.factors),
            resample_probability=cfg.resample_probability, mode=cfg.mode, hparams=self.names,
            bounds=tuple(zip(self.names, ranges)), log_scale=tuple((n, r[0] > 0) for n, r in zip(self.names, ranges)))
        self.cohort = cohort.index
        self.members = cohort.members["member"].to_numpy()
        groups = np.full(n_padded, -1, np.int32)  # padding: a group of its own, never eligible
        groups[: len(self.members)] = np.arange(len(self.members)) % cfg.groups
        self.groups = groups
        self._root = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), cohort.index)
        self._round = None

    def due(self, chunk: int, last: bool) -> bool:
        """A round comes after chunk ``chunk``: every ``every`` chunks past the burn-in, never after the last."""
        past = chunk - self.cfg.ready_after
        return not last and past >= self.cfg.every and past % self.cfg.every == 0

    def round_index(self, chunk: int) -> int:
        return (chunk - self.cfg.ready_after) // self.cfg.every

    def run(self, state, rows: pd.DataFrame, chunk: int, step: int):
        """One round after chunk ``chunk``: rank the members by ``pbt.metric`` in that chunk's
        ``rows``, exploit and explore. Returns ``(state, lineage rows)``."""
        scores = self.scores(rows)
        eligible = np.asarray(distributed.host(state.alive)) & np.isfinite(scores)
        key = streams.key(self._root, Stream.PBT, self.round_index(chunk))
        if self._round is None:  # the state's own sharding in and out: the next chunk does not recompile
            shardings = jax.tree.map(lambda a: a.sharding, state)
            # Donated: the gathered state reuses the old one's buffers instead of a second copy.
            self._round = jax.jit(partial(pbt_round, options=self.options),
                                  out_shardings=(shardings, None, None, None), donate_argnums=0)
        # Host values go in as numpy: with several processes, every process hands in the same ones.
        state, parents, before, after = self._round(state, np.asarray(scores), np.asarray(eligible),
                                                    np.asarray(self.groups), np.asarray(key))
        parents, before, after = distributed.host((parents, before, after))
        return state, self.lineage(chunk, step, scores, np.asarray(parents), before, after)

    def scores(self, rows: pd.DataFrame) -> np.ndarray:
        """Each member's latest ``pbt.metric`` in ``rows`` (whole-model), ``[K_padded]``; NaN where none."""
        metric = rows[(rows.metric == self.cfg.metric) & (rows.layer == "")]
        latest = metric[metric.step == metric.step.max()].set_index("member").value
        scores = np.full(len(self.groups), np.nan, np.float32)
        scores[: len(self.members)] = latest.reindex(self.members).to_numpy(np.float32)
        return scores

    def lineage(self, chunk: int, step: int, scores, parents, before: dict, after: dict) -> pd.DataFrame:
        """One row per member: its parent this round (itself if it kept its own state), both scores,
        and each explored hyperparameter before and after."""
        k = len(self.members)
        frame = pd.DataFrame({
            "cohort": np.int32(self.cohort), "round": np.int32(self.round_index(chunk)), "chunk": np.int32(chunk),
            "step": np.int64(step), "member": self.members.astype(np.int32),
            "parent": self.members[parents[:k]].astype(np.int32), "copied": parents[:k] != np.arange(k),
            "metric": self.cfg.metric, "score": scores[:k], "parent_score": scores[parents[:k]]})
        for name in self.names:
            frame[f"{name}_before"] = np.asarray(before[name])[:k]
            frame[f"{name}_after"] = np.asarray(after[name])[:k]
        return frame


class CohortSchedule:
    """A ``[replay]`` schedule in one cohort: after the chunk that ends at each of ``replay.steps``,
    every member's named hyperparameters take the next values. Leaves lineage rows as PBT rounds
    do (each member its own parent), so ``Results.schedule`` of a replay reads back what it trained with.
    """

    def __init__(self, cohort, n_padded: int):
        cfg, chunk_steps = cohort.config.replay, cohort.config.train.chunk_steps
        self.at = {step // chunk_steps: i for i, step in enumerate(cfg.steps)}
        self.values = {name.split(".", 1)[1]: values for name, values in cfg.hparams}
        self.cohort = cohort.index
        self.members = cohort.members["member"].to_numpy()

    def due(self, chunk: int, last: bool) -> bool:
        return not last and chunk in self.at

    def run(self, state, rows: pd.DataFrame, chunk: int, step: int):
        """Set the values due after chunk ``chunk``. Returns ``(state, lineage rows)``: each value
        before (read from the state) and after (read back from the new state)."""
        i, k = self.at[chunk], len(self.members)
        before = distributed.host({n: state.hparams[n] for n in self.values})
        hparams = dict(state.hparams)
        for name, values in self.values.items():
            old = state.hparams[name]
            hparams[name] = jax.device_put(np.full(old.shape, values[i], np.float32), old.sharding)
        state = state._replace(hparams=hparams)
        after = distributed.host({n: state.hparams[n] for n in self.values})
        frame = pd.DataFrame({
            "cohort": np.int32(self.cohort), "round": np.int32(i + 1), "chunk": np.int32(chunk),
            "step": np.int64(step), "member": self.members.astype(np.int32), "parent": self.members.astype(np.int32),
            "copied": np.zeros(k, bool), "metric": "", "score": np.full(k, np.nan, np.float32),
            "parent_score": np.full(k, np.nan, np.float32)})
        for name in self.values:
            frame[f"{name}_before"] = np.asarray(before[name])[:k]
            frame[f"{name}_after"] = np.asarray(after[name])[:k]
        return state, frame


def between_chunks(cohort, n_padded: int):
    """What changes the members between chunks in this cohort: its PBT rounds, its replayed
    schedule, or None."""
    if cohort.config.pbt is not None:
        return CohortPBT(cohort, n_padded)
    if cohort.config.replay is not None:
        return CohortSchedule(cohort, n_padded)
    return None
