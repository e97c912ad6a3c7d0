"""The one line format of jaxdyn's messages while it trains: ``[jaxdyn] ...`` on stdout, flushed.

With several processes (``jaxdyn.distributed``) only process 0 speaks: the others run the
same study and would repeat every line. Their errors still reach their own stderr."""

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence ``log`` in this process (a process other than 0 of a distributed run)."""
    global _quiet
    _quiet = quiet


def log(message: str) -> None:
    if not _quiet:
        print(f"[jaxdyn] {message}", flush=True)
