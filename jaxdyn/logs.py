"""The one line format of jaxdyn's messages while it trains: ``[jaxdyn] ...`` on stdout, flushed."""


def log(message: str) -> None:
    print(f"[jaxdyn] {message}", flush=True)
