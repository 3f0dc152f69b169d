"""``GET /api/openapi.json`` and ``/api/openapi.yaml``: the hand-written description of the API."""

from __future__ import annotations

import functools
from importlib import resources

import yaml
from flask import Blueprint, Response, jsonify

bp = Blueprint("openapi", __name__, url_prefix="/api")


@functools.cache
def spec_text() -> str:
    """hotline/openapi.yaml as shipped in the package."""
    return resources.files("web").joinpath("openapi.yaml").read_text(encoding="utf-8")


@functools.cache
def spec() -> dict:
    """The OpenAPI document, parsed (read-only: shared by every request)."""
    return yaml.safe_load(spec_text())


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(spec())


@bp.get("/openapi.yaml")
def openapi_yaml():
    return Response(spec_text(), status=200, content_type="application/yaml; charset=utf-8")
