"""hotline/openapi.yaml describes exactly the routes the app serves, and is served as JSON and YAML."""

from __future__ import annotations

import re

import pytest
import yaml

from web.openapi import spec, spec_text
from tests.test_web_support import app, client, resolve, services  # noqa: F401 (fixtures)

METHODS = {"get", "put", "post", "delete", "patch"}


def _flask_routes(app):  # noqa: F811
    """{openapi path: {methods}} for every route under /api, /health and /metrics."""
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        if not path.startswith(("/api", "/health", "/metrics", "/twilio/")):
            continue
        routes.setdefault(path, set()).update(m.lower() for m in rule.methods if m.lower() in METHODS)
    return routes


def test_is_openapi_3_1():
    document = spec()
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] and document["info"]["version"]
    assert document["components"]["securitySchemes"]["bearerToken"] == {
        "type": "http", "scheme": "bearer", "description": document["components"]["securitySchemes"]
        ["bearerToken"]["description"]}


def test_every_route_is_described_and_every_description_is_a_route(app):  # noqa: F811
    served = _flask_routes(app)
    assert {"/api/tickets", "/api/tickets/{number}", "/health", "/metrics", "/api/openapi.json"} <= set(served)
    described = {path: {m for m in item if m in METHODS} for path, item in spec()["paths"].items()}
    assert served == described


def test_path_parameters_match_the_routes():
    for path, item in spec()["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (method, path)


def test_every_reference_resolves():
    document = spec()

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                assert isinstance(resolve(document, node["$ref"]), dict), node["$ref"]
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(document)


OPEN_PATHS = ("/health", "/metrics", "/api/openapi", "/twilio/")  # what a load balancer or a scraper reads
DESK_READ_PATHS = ("/api/queues", "/api/agents")  # a bearer token, or the desk session (EventSource sends no header)


def test_the_api_needs_the_bearer_token_and_only_health_metrics_and_the_spec_are_open():
    for path, item in spec()["paths"].items():
        for method, operation in item.items():
            if not path.startswith(OPEN_PATHS):
                if method == "get" and path.startswith(DESK_READ_PATHS):  # the live desk pages read these
                    assert operation["security"] == [{"bearerToken": []}, {"deskSession": []}], path
                else:
                    assert operation["security"] == [{"bearerToken": []}], path
                assert "401" in operation["responses"], path
            else:
                assert operation["security"] == [], path
            assert operation["operationId"] and operation["responses"], path


def test_ticket_filters_are_the_ones_the_api_reads():
    from web.tickets import LIST_PARAMETERS

    parameters = spec()["paths"]["/api/tickets"]["get"]["parameters"]
    assert {p["name"] for p in parameters if p["in"] == "query"} == LIST_PARAMETERS


def test_enums_match_the_domain():
    from orders.caller import KINDS
    from orders.lifecycle import CallOutcome, Channel, Language, TicketStatus, Urgency

    schemas = spec()["components"]["schemas"]
    assert schemas["TicketStatus"]["enum"] == [s.value for s in TicketStatus]
    ticket = schemas["Ticket"]["properties"]
    assert ticket["urgency"]["enum"] == [u.value for u in Urgency]
    assert ticket["language"]["enum"] == [x.value for x in Language]
    assert ticket["channel"]["enum"] == [c.value for c in Channel]
    assert schemas["Caller"]["properties"]["kind"]["enum"] == list(KINDS)
    assert schemas["Call"]["properties"]["outcome"]["enum"] == [o.value for o in CallOutcome] + [None]


@pytest.mark.parametrize("path", ["/api/openapi.json", "/api/openapi.yaml"])
def test_served_without_token(client, path):  # noqa: F811
    response = client.get(path)
    assert response.status_code == 200
    document = response.get_json() if path.endswith(".json") else yaml.safe_load(response.get_data(as_text=True))
    assert document == spec()
    assert response.content_type.startswith("application/json" if path.endswith(".json") else "application/yaml")


def test_yaml_is_the_file_shipped_in_the_package():
    assert yaml.safe_load(spec_text()) == spec()
