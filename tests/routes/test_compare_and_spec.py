"""Pure logic, no server: the comparator's noise cancellation and the route spec's validation."""

from __future__ import annotations

import pytest

from shiftover.errors import SpecError
from shiftover.routes.compare import STATUS, Answer, compare_answers, flatten
from shiftover.routes.gateway import Split
from shiftover.routes.haproxy import weights_for
from shiftover.routes.spec import parse_route_spec


def answer(status: int, body: dict) -> Answer:  # type: ignore[type-arg]
    return Answer(status, {**flatten(body), STATUS: status})


def test_flatten_names_nested_fields_and_list_items() -> None:
    assert flatten({"a": {"b": 1, "c": [2, {"d": 3}]}, "e": []}) == {"a.b": 1, "a.c[0]": 2, "a.c[1].d": 3, "e": []}


def test_fields_differing_between_the_two_old_answers_are_noise() -> None:
    old_a = answer(200, {"id": 7, "total": 10, "meta": {"request_id": "x1", "at": 1}})
    old_b = answer(200, {"id": 7, "total": 10, "meta": {"request_id": "x2", "at": 2}})
    new = answer(200, {"id": 7, "total": 11, "meta": {"request_id": "y", "at": 3}})
    c = compare_answers("/orders/7", old_a, old_b, new)
    assert c.noise == {"meta.request_id", "meta.at"}
    assert c.mismatched == {"total"}


def test_a_missing_field_a_status_and_declared_fields() -> None:
    old = answer(200, {"id": 7, "v": "old"})
    assert compare_answers("/p", old, old, answer(200, {"v": "new"})).mismatched == {"id", "v"}
    assert compare_answers("/p", old, old, answer(200, {"v": "new"}), frozenset({"v"})).mismatched == {"id"}
    assert compare_answers("/p", old, old, answer(500, {"id": 7, "v": "old"})).mismatched == {STATUS}
    # a status that flaps between the two old answers is still compared
    flapping = compare_answers("/p", old, answer(503, {"id": 7, "v": "old"}), answer(503, {"id": 7, "v": "old"}))
    assert STATUS in flapping.mismatched


def test_every_route_gate_a_spec_may_name_has_a_check_and_every_check_a_name() -> None:
    from shiftover.checks.routes import ROUTE_GATES as CHECKS
    from shiftover.routes.spec import ROUTE_GATES

    assert set(CHECKS) == set(ROUTE_GATES)


def test_weights_and_split() -> None:
    assert weights_for(0) == (100, 0) and weights_for(100) == (0, 100) and weights_for(12.5) == (88, 12)
    assert Split("r", 90, 10).percent_new == 10 and Split("r", 0, 0).percent_new == 0


BASE = {
    "kind": "route",
    "name": "m",
    "old": {"address": "127.0.0.1:8001"},
    "new": {"address": "127.0.0.1:8002"},
    "routes": [{"name": "orders", "prefix": "/orders"}],
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"new": {"address": "127.0.0.1:8001"}}, "(spec)"),
        ({"routes": [{"name": "o", "prefix": "/o", "methods": ["FETCH"]}]}, "routes.0.methods"),
        ({"canary": {"steps": [10, 50]}}, "canary.steps"),
        ({"gates": [{"name": "checksum", "threshold": 0}]}, "gates.0.name"),
        (
            {"routes": [{"name": "o", "prefix": "/o", "requires": {"migration": "orders", "phase": "soon"}}]},
            "routes.0.requires.phase",
        ),
        ({"surprise": 1}, "surprise"),
        ({"old": {"address": "127.0.0.1:99999"}}, "old.address"),
        ({"routes": [{"name": "o", "prefix": "/o"}, {"name": "o", "prefix": "/p"}]}, "routes"),
        # /orders/<id> would always match the first route: the second never gets a request
        ({"routes": [{"name": "o", "prefix": "/orders"}, {"name": "one", "prefix": "/orders/1"}]}, "routes"),
        ({"approvers": ["alice"], "approvals": {"approvers": ["bob"]}}, "(spec)"),
        ({"approvals": {"keys": {"alice": "not-a-key"}}}, "approvals.keys"),
    ],
)
def test_a_bad_route_spec_names_its_field(change: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(SpecError) as caught:
        parse_route_spec({**BASE, **change})
    assert caught.value.field == field


def test_a_route_spec_takes_the_table_specs_approvals_section_and_the_short_form() -> None:
    short = parse_route_spec({**BASE, "approvers": ["alice", "bob"]})
    section = parse_route_spec({**BASE, "approvals": {"approvers": ["alice", "bob"], "timeout_seconds": 30}})
    assert short.approvals.approvers == section.approvals.approvers == ("alice", "bob")
    assert (short.approvals.timeout_seconds, section.approvals.timeout_seconds) == (3600, 30)
    assert short.approvals.public_keys is None
    assert parse_route_spec(short.model_dump(mode="json")) == short  # a dumped spec loads again (the flow reads one)


def test_routes_may_share_a_prefix_by_method_or_nest_most_specific_first() -> None:
    by_method = [{"name": "r", "prefix": "/orders"}, {"name": "w", "prefix": "/orders", "methods": ["POST"]}]
    nested = [{"name": "one", "prefix": "/orders/1"}, {"name": "o", "prefix": "/orders"}]
    sibling = [{"name": "o", "prefix": "/orders"}, {"name": "h", "prefix": "/orders-history"}]
    for routes in (by_method, nested, sibling):
        assert [r.name for r in parse_route_spec({**BASE, "routes": routes}).routes] == [r["name"] for r in routes]


def test_unsafe_routes_get_no_dark_launch() -> None:
    from shiftover.routes.plan import build_route_plan

    spec = parse_route_spec({**BASE, "routes": [{"name": "orders_w", "prefix": "/orders", "methods": ["POST"]}]})
    kinds = [s.kind for s in build_route_plan(spec).stages]
    assert "dark_launch" not in kinds and kinds[0] == "pass_through"


def test_the_example_route_spec_parses_and_waits_on_the_table() -> None:
    from pathlib import Path

    from shiftover.routes.plan import build_route_plan
    from shiftover.routes.spec import load_route_spec

    spec = load_route_spec(Path(__file__).parents[2] / "examples" / "orders-routes.yaml")
    plan = build_route_plan(spec)
    assert plan.stages[0].kind == "wait_for_table" and plan.stages[0].route == "orders_reads"
    assert [s.kind for s in plan.for_route("orders_writes")][:2] == ["wait_for_table", "pass_through"]
    assert spec.approvals.approvers == ("alice", "bob")


def test_shiftover_plan_prints_a_route_spec_s_stages() -> None:
    from pathlib import Path

    from typer.testing import CliRunner

    from shiftover.cli import app

    example = str(Path(__file__).parents[2] / "examples" / "orders-routes.yaml")
    result = CliRunner().invoke(app, ["plan", example])
    assert result.exit_code == 0, result.output
    assert "route move orders-routes" in result.output and "orders_reads.dark_launch" in result.output
    assert result.output.count("IRREVERSIBLE") == 2  # one retire per route


def test_the_route_deployments_name_real_flows_and_their_parameters() -> None:
    import importlib
    import inspect
    from pathlib import Path

    import yaml

    root = Path(__file__).parents[2]
    deployments = yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]
    routes = {d["name"]: d for d in deployments if "routes" in d.get("tags", [])}
    assert set(routes) == {"route-move", "route-rollback"}
    for d in routes.values():
        path, _, name = d["entrypoint"].partition(":")
        module = importlib.import_module("shiftover." + path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(d["parameters"]) <= accepted, (d["name"], set(d["parameters"]) - accepted)
        assert (root / d["parameters"]["spec_path"]).exists()
