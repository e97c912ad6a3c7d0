"""Federated averaging as a population: every client is a member, a federation's round is a
weighted mean over the member axis inside the compiled chunk (``[federated]``).

``config``: the section and its checks. ``partition``: how the training set is dealt to
clients. ``round``: the server side of a round. ``chunk``: the federated task and chunk
program. ``setup``: the member table's clients and each cohort's ``Federation``.
"""
