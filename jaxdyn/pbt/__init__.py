"""Population-based training: rounds of exploit and explore between chunks (``round.py``)."""

from jaxdyn.pbt.round import PBTRoundOptions, choose_parents, explore, gather_members, pbt_round

__all__ = ["PBTRoundOptions", "choose_parents", "explore", "gather_members", "pbt_round"]
