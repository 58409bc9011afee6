"""Helpers for the report tests: schema checks of every JUnit and JSON report written."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path

import jsonschema
import xmlschema

from autoserv import report

PACKAGE = Path(report.__file__).resolve().parent


@cache
def junit_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(PACKAGE / "junit.xsd"))


@cache
def json_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((PACKAGE / "results.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def check_junit(path: str | Path) -> ET.Element:
    """Validate a JUnit file against autoserv's junit.xsd (and the Jenkins rules); its root."""
    junit_schema().validate(str(path))
    root = ET.parse(str(path)).getroot()
    for case in root.iter("testcase"):
        assert "file" not in case.attrib, "Jenkins rejects testcase@file"
        assert case.find("properties") is None, "Jenkins rejects testcase/properties"
    for suite in root.iter("testsuite"):
        names = [(c.get("classname"), c.get("name")) for c in suite.iter("testcase")]
        assert len(names) == len(set(names)), f"repeated testcase names in {suite.get('name')}"
    return root


def check_json(path: str | Path) -> dict:
    """Validate a results.json against results.schema.json; the document."""
    doc = json.loads(Path(path).read_text())
    json_validator().validate(doc)
    return doc


def check_reports(resultdir: str | Path) -> tuple[ET.Element, dict, str]:
    """The three reports of a results dir, the JUnit and JSON ones validated."""
    d = Path(resultdir)
    root = check_junit(d / "junit.xml")
    doc = check_json(d / "results.json")
    page = (d / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    return root, doc, page
