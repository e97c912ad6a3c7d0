"""``docs/config.md``, generated from the config declarations themselves.

Every section's table comes from its dataclass: field names, defaults and the
comment written beside (or above) each field in the source. The registries add
what each choice means: datasets, model kinds, optimizer families, schedules,
probes, task kinds, member hyperparameters. ``python scripts/config_doc.py``
writes the file; a test fails when the committed file differs from ``render()``.
"""

import dataclasses
import inspect
import re

from jaxdyn.axes import COHORT_AXES, MEMBER_CHOICES, MEMBER_HPARAMS
from jaxdyn.config import LossConfig, OptimConfig, StudyConfig, TaskConfig, TrainConfig
from jaxdyn.data import DATASETS, DataConfig
from jaxdyn.gan.config import GANConfig
from jaxdyn.models import MODELS
from jaxdyn.optim import FAMILIES
from jaxdyn.fork_config import ForkConfig
from jaxdyn.federated.config import FederatedConfig
from jaxdyn.pbt.config import PBTConfig, ReplayConfig
from jaxdyn.probes import DEFAULT_BATCH, PROBES, ProbesConfig
from jaxdyn.schedules import SCHEDULES
from jaxdyn.tasks.kinds import TASK_KINDS

FIELD = re.compile(r"^\s+(\w+)\s*:\s*[^=#]+?(?:=\s*(?P<default>.+?))?\s*(?:#\s*(?P<comment>.*))?$")


# Fields many declarations share, where the declaration itself carries no comment.
SHARED = {
    "name": "which one: see the list below",
    "hidden": "widths of the hidden dense layers",
    "activation": "nonlinearity of the hidden layers (`jaxdyn list`)",
    "init": "initialiser of the kernels (`jaxdyn list`)",
    "every": "chunks between evaluations of the probe; 0 = off (it always runs at step 0 and after the last chunk)",
    "kind": "the task kind: see the list below",
}


def field_comments(cls) -> dict[str, str]:
    """``{field: comment}`` from ``cls``'s source: the comment on the field's line, or else
    the comment lines directly above it (above a commented field they head a group)."""
    out, above = {}, []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# ").rstrip())
            continue
        match = FIELD.match(line)
        if match and not stripped.startswith(("def ", "@", '"""')):
            out[match.group(1)] = (match.group("comment") or " ".join(above)).strip()
        above = []
    return out


def _value(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if dataclasses.is_dataclass(v):
        return f"a `{getattr(v, 'kind', type(v).__name__)}` model table"
    return repr(v)


def fields_table(cls, skip=("kind", "hparams")) -> list[str]:
    comments = field_comments(cls)
    rows = ["| key | default | what |", "| --- | --- | --- |"]
    instance = cls()
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        what = (comments.get(f.name) or SHARED.get(f.name, "")).replace("|", "\\|")
        rows.append(f"| `{f.name}` | `{_value(getattr(instance, f.name))}` | {what} |")
    return rows


def render() -> str:
    out = ["# Configuration reference", "",
           "Generated from the config declarations by `python scripts/config_doc.py`; do not edit by hand",
           "(a test fails when this file is stale). A study is a TOML file of these sections; every key",
           "is optional. `jaxdyn list` prints the same registries.", ""]

    def section(title, lines, intro=""):
        out.extend([f"## {title}", ""] + ([intro, ""] if intro else []) + lines + [""])

    section("[study]", fields_table(StudyConfig))
    data = fields_table(DataConfig)
    data += ["", "Datasets (`name`), with the fields each reads beyond the common ones:", ""]
    data += [f"- `{n}`: {s.doc}" + (f" Fields: {', '.join(f'`{f}`' for f in s.fields)}." if s.fields else "")
             for n, s in DATASETS.items()]
    section("[data]", data)
    model = []
    for kind, spec in MODELS.items():
        model += [f"### `kind = \"{kind}\"`", "", spec.doc, ""] + fields_table(spec.config) + [""]
    section("[model]", model, "The model kind and its own fields; a field of another kind is refused.")
    section("[loss]", fields_table(LossConfig))
    optim = fields_table(OptimConfig) + ["", "Families (`name`) and their member numbers with defaults:", ""]
    optim += [f"- `{n}`: {f.doc}; " + ", ".join(f"`{k}` = {v:g}" for k, v in f.defaults.items())
              for n, f in FAMILIES.items()]
    optim += ["", "Schedules (`schedule`):", ""]
    optim += [f"- `{n}`: {s.doc}" + (f"; member numbers {', '.join(f'`{k}`' for k in s.hparams)}" if s.hparams
                                      else "") for n, s in SCHEDULES.items()]
    section("[optim]", optim, "Structural keys below; every other key is a number of the family or schedule "
                              "(a member axis).")
    section("[train]", fields_table(TrainConfig))
    task = fields_table(TaskConfig, skip=("hparams", "options")) + [""] + [f"- `{n}`: {k.doc}" for n, k in TASK_KINDS.items()]
    section("[task]", task)
    section("[gan]", fields_table(GANConfig) + ["", "Member numbers: `g_<family number>`, `d_<family number>`, "
                                               "`gp_weight`, and the schedule's (`alpha`, `decay_rate`)."],
            "With `[task] kind = \"gan\"`; `[gan.generator]` and `[gan.discriminator]` are `[model]` tables.")
    probes = [f"`batch_size` = {ProbesConfig.batch_size}: the first N training examples, the probe batch; 0 (the "
              f"default) is {DEFAULT_BATCH}, or the whole training set under `train.full_batch`, so that curvature "
              "is that of the loss gradient descent follows.", ""]
    for name, probe in PROBES.items():
        on = "on by default" if probe.default_on else "off unless its table is given"
        probes += [f"### `[probes.{name}]`", "", f"{probe.doc} ({probe.cost}, {on})", ""]
        probes += fields_table(probe.options) + [""]
    section("[probes]", probes)
    section("[pbt]", fields_table(PBTConfig, skip=()), "Population-based training within each cohort (off unless the table "
            "is given): every `every` chunks past `ready_after`, the bottom members copy a better one's state and "
            "explore the copied hyperparameters; rows in `lineage.parquet`. `[pbt.bounds]` holds "
            "`\"section.name\" = [low, high]`.")
    comments = field_comments(ForkConfig)
    fork = ["| key | default | what |", "| --- | --- | --- |"]
    fork += [f"| `{'from' if f.name == 'run' else f.name}` | "
             f"{'required' if f.name == 'run' else f'`{_value(f.default)}`'} | {comments.get(f.name, '')} |"
             for f in dataclasses.fields(ForkConfig)]
    section("[init]", fork, "Start every member from a trained member of another run (a fork; off unless the table "
            "is given): one of `member` or `members`. The members keep their own hyperparameters, seeds (data "
            "order, dropout) and step count; the parent run folder must stay while the fork runs or resumes.")
    comments = field_comments(ReplayConfig)
    replay = ["| key | default | what |", "| --- | --- | --- |"]
    replay += [f"| `{'from' if f.name == 'run' else f.name}` | `{_value(f.default)}` | {comments.get(f.name, '')} |"
               for f in dataclasses.fields(ReplayConfig) if f.name != "hparams"]
    replay += ["", "`[replay.hparams]` holds `\"section.name\" = [values]`, one value per entry of `steps`: from "
               "that step on, every member trains with it. `jaxdyn run --replay RUN:MEMBER` writes this table from "
               "a PBT member's schedule; it can also be written by hand (a piecewise-constant schedule of any member "
               "hyperparameter)."]
    section("[replay]", replay, "Member hyperparameters changed between chunks at given steps (off unless the table "
            "is given; not with `[pbt]`). Each change is a row of `lineage.parquet`.")
    section("[federated]", fields_table(FederatedConfig),
            "Federated averaging (off unless the table is given): every setting x seed of a cohort is a federation "
            "of `clients` members; each round, the sampled clients take `local_steps` steps on their own examples "
            "and the server averages them. `server_learning_rate` and `prox_mu` are member numbers (grid axes "
            "`federated.server_learning_rate`, `federated.prox_mu`); the others are structural. Not with `[pbt]`, "
            "`[replay]` or `[init]`; the partition is written to `partition.parquet`.")
    grid = ["Cohort axes (one compiled program each): " + ", ".join(f"`{a}`" for a in COHORT_AXES) + ".", "",
            "Member axes (one population, no compile per value): `optim.<number>`, `gan.<number>` and:", ""]
    grid += [f"- `{k}`: {h.describe()}" for k, h in MEMBER_HPARAMS.items()]
    grid += [f"- `{k}`: {c.describe()}" for k, c in MEMBER_CHOICES.items()]
    section("[grid]", grid, "Each key is an axis with a list of values; the study is their product.")
    return "\n".join(out).rstrip() + "\n"
