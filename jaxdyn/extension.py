"""Components named by import path: the seam through which a user's model, data, loss,
probe or task enters a study.

A config names a component of the catalogue by its registry name (``"mlp"``) or any
importable object by ``"package.module:Name"``. An object handed to ``jaxdyn.run``
directly (``model=MyModule(width=64)``) is recorded in ``config.toml`` under its
import path, so the study file stays complete and a later process can rebuild it.

Objects handed over are also remembered for this process under that path (as
``import`` remembers modules in ``sys.modules``): a class defined in ``__main__`` or
in a notebook has a path that no other process can import, so it works in the
process that defined it, and a resume elsewhere is refused with a message that
says to pass it again.
"""

import importlib
import inspect

from jaxdyn.errors import ConfigError

_GIVEN: dict[str, object] = {}  # path -> object handed to jaxdyn.run in this process


def is_path(name) -> bool:
    """Whether ``name`` is an import path ``"module:attribute"`` rather than a registry name."""
    return isinstance(name, str) and ":" in name


def path_of(obj) -> str:
    """``"module:qualname"`` of a class or function (of its class for an instance)."""
    target = obj if inspect.isclass(obj) or inspect.isroutine(obj) else type(obj)
    return f"{target.__module__}:{target.__qualname__}"


def importable(obj) -> bool:
    """Whether another process can import ``obj`` (its class, for an instance) by ``path_of``."""
    target = obj if inspect.isclass(obj) or inspect.isroutine(obj) else type(obj)
    if target.__module__ == "__main__" or "<locals>" in target.__qualname__:
        return False
    try:
        return _import(path_of(target)) is target
    except (ImportError, AttributeError):
        return False


def remember(obj, path: str | None = None) -> str:
    """Remember ``obj`` for this process under ``path`` (default ``path_of(obj)``); return the path."""
    path = path or path_of(obj)
    _GIVEN[path] = obj
    return path


def given(path: str):
    """The object handed over in this process under ``path``, or None."""
    return _GIVEN.get(path)


def resolve(path: str, where: str):
    """The object at ``path``: one handed to ``jaxdyn.run`` in this process, or imported.

    Args:
      path: ``"package.module:Name"`` (``Name`` may be dotted: ``Outer.Inner``).
      where: the config field that names it, for messages (``"model.kind"``).

    Raises:
      ConfigError: nothing is importable at ``path``; for an object defined in
        ``__main__`` (a script or notebook), the message says to pass it again.
    """
    if path in _GIVEN:
        return _GIVEN[path]
    module, _, name = path.partition(":")
    if module == "__main__" or "<locals>" in name or module.startswith("<"):
        raise ConfigError(
            f"{where} = {path!r} was handed to jaxdyn.run as a Python object defined in {module or 'a notebook'} "
            "(a script or notebook), which no other process can import; pass the same object again "
            "(jaxdyn.run(..., resume=RUN, model=/data=/loss=/probes=...)), or move it into an importable "
            "module and name it as \"package.module:Name\"")
    if not module or not name:
        raise ConfigError(f"{where} = {path!r}: write an import path as \"package.module:Name\"")
    try:
        return _import(path)
    except ModuleNotFoundError as e:
        raise ConfigError(f"{where} = {path!r}: cannot import module {module!r} ({e}); install the package or "
                          "put it on PYTHONPATH") from None
    except AttributeError:
        raise ConfigError(f"{where} = {path!r}: module {module!r} has no attribute {name!r}") from None


def _import(path: str):
    module, _, name = path.partition(":")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def accepts(fn, keyword: str) -> bool:
    """Whether calling ``fn`` with ``keyword=...`` is allowed (named, or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return keyword in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
