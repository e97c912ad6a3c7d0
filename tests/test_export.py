"""The TensorBoard export as its consumer sees it: read back through TensorBoard's HParams
plugin (its own event multiplexer, data provider and HTTP routes, the JSON the dashboard
fetches), and compared with ``members.csv``."""

import pandas as pd
import pytest

import jaxdyn
from jaxdyn.cli import main

# SGD has no b1, b2 or eps: its members' cells in members.csv are empty, Adam's are not.
CFG = {"study": {"name": "optimizers", "seeds": 1}, "model": {"hidden": [8]},
       "train": {"steps": 10, "batch_size": 16, "chunk_steps": 10, "log_every": 5},
       "grid": {"optim.name": ["sgd", "adam"], "model.activation": ["relu", "tanh"]}}
RESULTS = {"final_train_loss": "final/train_loss", "final_test_loss": "final/test_loss",
           "final_test_accuracy": "final/test_accuracy", "diverged_at": "diverged_at"}
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """The run folder, its members.csv as written, and the export folder."""
    root = tmp_path_factory.mktemp("export")
    jaxdyn.run(CFG, out=root / "run", progress=False, summary=False)
    assert main(["export", "tensorboard", str(root / "run"), str(root / "tb")]) == 0
    return root / "run", pd.read_csv(root / "run" / "members.csv"), root / "tb"


class Dashboard:
    """TensorBoard's HParams plugin over a log dir, asked what its dashboard asks."""

    def __init__(self, logdir):
        from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
        from tensorboard.plugins import base_plugin
        from tensorboard.plugins.hparams import hparams_plugin

        self.multiplexer = plugin_event_multiplexer.EventMultiplexer()
        self.multiplexer.AddRunsFromDirectory(str(logdir))
        self.multiplexer.Reload()
        provider = data_provider.MultiplexerDataProvider(self.multiplexer, str(logdir))
        context = base_plugin.TBContext(logdir=str(logdir), multiplexer=self.multiplexer, data_provider=provider)
        self.routes = hparams_plugin.HParamsPlugin(context).get_plugin_apps()

    def post(self, route: str, body: dict) -> dict:
        from werkzeug.test import Client

        response = Client(self.routes[route]).post(route, json=body)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def experiment(self) -> dict:
        return self.post("/experiment", {})

    def session_groups(self, *col_params) -> dict[str, dict]:
        body = {"startIndex": 0, "sliceSize": 1000, "allowedStatuses": ALL_STATUSES, "colParams": list(col_params)}
        return {g["name"]: g for g in self.post("/session_groups", body)["sessionGroups"]}


@pytest.fixture(scope="module")
def dashboard(export):
    return Dashboard(export[2])


def hparam_columns(members: pd.DataFrame) -> list[str]:
    return [c for c in members.columns if c != "member" and c not in RESULTS]


def test_one_experiment_at_the_root_declares_every_column_of_members_csv(export, dashboard):
    _, members, _ = export
    experiment = dashboard.experiment()
    hparams = {h["name"]: h for h in experiment["hparamInfos"]}
    assert sorted(hparams) == sorted(hparam_columns(members))
    assert {"b1", "b2", "eps"} <= set(hparams)  # the first member (SGD) has none of them
    assert [m["name"]["tag"] for m in experiment["metricInfos"]] == [RESULTS[c] for c in members if c in RESULTS]
    # The member id is the session's name: with the hparam and metric columns, that is all of members.csv.
    assert set(dashboard.session_groups()) == {f"member_{m:05d}" for m in members.member}

    assert hparams["optim.name"]["type"] == "DATA_TYPE_STRING"
    assert hparams["optim.name"]["domainDiscrete"] == ["adam", "sgd"]
    assert hparams["b1"]["type"] == "DATA_TYPE_FLOAT64"
    assert hparams["b1"]["domainInterval"] == {"minValue": 0.9, "maxValue": 0.9}
    # The dashboard shows the columns that differ first: those with more than one value in members.csv.
    differs = {c for c in hparam_columns(members) if members[c].nunique() > 1}
    assert {"optim.name", "model.activation"} <= differs
    assert {name for name, h in hparams.items() if h.get("differs")} == differs

    # Only the root run holds the experiment: no member's own columns can stand in for it.
    plugin = dashboard.multiplexer.PluginRunToTagToContent("hparams")
    assert {run: set(tags) for run, tags in plugin.items()} == {
        ".": {"_hparams_/experiment"},
        **{f"member_{m:05d}": {"_hparams_/session_start_info", "_hparams_/session_end_info"}
           for m in members.member}}


def test_each_session_holds_its_members_values_and_empty_where_it_lacks_one(export, dashboard):
    _, members, _ = export
    groups = dashboard.session_groups()
    for row in members.to_dict("records"):
        group = groups[f"member_{row['member']:05d}"]
        want = {c: (v if isinstance(v, str) else float(v)) for c in hparam_columns(members)
                if not pd.isna(v := row[c])}
        assert group["hparams"] == want
        assert (row["optim.name"] == "sgd") == ("b1" not in group["hparams"])  # an empty cell, not a 0
        got = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert got == pytest.approx({tag: row[c] for c, tag in RESULTS.items()}, rel=1e-6)
        assert [s["status"] for s in group["sessions"]] == ["STATUS_SUCCESS"]


def test_the_dashboards_filters_see_a_missing_value_as_missing(export, dashboard):
    _, members, _ = export
    adam = {f"member_{m:05d}" for m in members.member[members["optim.name"] == "adam"]}
    assert set(dashboard.session_groups({"hparam": "b1", "excludeMissingValues": True})) == adam
    by_optimizer = {"hparam": "optim.name", "filterDiscrete": ["adam"]}
    assert set(dashboard.session_groups(by_optimizer)) == adam
    ordered = dashboard.session_groups({"hparam": "b1", "order": "ORDER_ASC", "missingValuesFirst": True})
    assert set(list(ordered)[:len(members) - len(adam)]) == {f"member_{m:05d}" for m in members.member} - adam


def test_a_second_export_into_the_same_folder_is_refused(export):
    from jaxdyn.export import export_tensorboard

    run, _, tb = export
    with pytest.raises(FileExistsError, match="export into a new folder"):
        export_tensorboard(run, tb, progress=False)
    (tb.parent / "only_root").mkdir()
    (tb.parent / "only_root" / next(tb.glob("events.out.tfevents*")).name).touch()
    with pytest.raises(FileExistsError, match="export into a new folder"):
        export_tensorboard(run, tb.parent / "only_root", progress=False)
    with pytest.raises(jaxdyn.ConfigError, match="export folder /proc/jaxdyn-tb is not writable"):
        export_tensorboard(run, "/proc/jaxdyn-tb", progress=False)  # /proc refuses even root
