"""The sidebar's TypeScript types say what the server sends: they cannot drift apart.

The REST API's bodies are pydantic models (cellpipe_server/models.py) and the events follow
a JSON schema (cellpipe_server/events/run-state.json); the sidebar declares the same shapes
as TypeScript interfaces (labextension/src). These tests read the interfaces from the ``.ts``
files as they are and compare each field's name and type with the model's JSON schema, so
a field added, renamed or retyped on one side only fails here, naming it.

Optional marks (``?``) are not compared: the server writes every field of a model (also
those with defaults), so whether the UI treats one as optional is the UI's choice.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cellpipe_server import models

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "labextension" / "src"

#: pydantic model -> the TypeScript interface that receives it.
RESPONSES = {
    models.DescribeStep: "IStepStatus",
    models.DescribeRun: "IRunStatus",
    models.ListRunsResponse: "IRunList",
    models.DescribeBackend: "IBackend",
    models.DescribeProfile: "IProfile",
    models.ListProfilesResponse: "IProfileList",
}
EVENT_SCHEMA = REPO / "jupyter_extension" / "cellpipe_server" / "events" / "run-state.json"
EVENT_INTERFACE = "IRunStateEvent"


# -- the TypeScript side -------------------------------------------------------------------------


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def ts_interfaces(src: Path = SRC) -> dict[str, dict[str, str]]:
    """Every ``export interface`` in ``src/*.ts(x)``: name -> {field: type as written}."""
    out: dict[str, dict[str, str]] = {}
    for f in sorted([*src.glob("*.ts"), *src.glob("*.tsx")]):
        text = _strip_comments(f.read_text(encoding="utf-8"))
        for m in re.finditer(r"export interface (\w+)[^{]*\{", text):
            depth, i = 1, m.end()
            while depth:
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            body = text[m.end() : i - 1]
            fields = {}
            for member in _members(body):
                fm = re.fullmatch(r"(?:readonly\s+)?(\w+)\??\s*:\s*(.+)", member, flags=re.S)
                if fm:  # methods and index signatures are not data fields
                    fields[fm.group(1)] = " ".join(fm.group(2).split())
            out[m.group(1)] = fields
    return out


def _members(body: str) -> list[str]:
    """The body split at top-level ``;`` (not inside ``{}`` or ``<>``)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(body):
        if ch in "{<(":
            depth += 1
        elif ch in "}>)":
            depth -= 1
        elif ch == ";" and depth == 0:
            parts.append(body[start:i].strip())
            start = i + 1
    tail = body[start:].strip()
    return [p for p in [*parts, tail] if p]


def ts_type(text: str) -> frozenset[str]:
    """A TypeScript type as a set of alternatives, string literals counting as ``string``."""
    alternatives, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "<({":
            depth += 1
        elif ch in ">)}":
            depth -= 1
        elif ch == "|" and depth == 0:
            alternatives.append(text[start:i].strip())
            start = i + 1
    alternatives.append(text[start:].strip())
    out = set()
    for alt in alternatives:
        if re.fullmatch(r"'[^']*'|\"[^\"]*\"", alt):
            alt = "string"
        m = re.fullmatch(r"Record<\s*string\s*,\s*(.+)>", alt)
        if m:
            (inner,) = ts_type(m.group(1)) or {"unknown"}
            alt = f"Record<string, {inner}>"
        out.add(alt.replace("Array<", "").rstrip(">") + "[]" if alt.startswith("Array<") else alt)
    return frozenset(out)


# -- the Python side ----------------------------------------------------------------------------


def schema_type(prop: dict[str, Any], names: dict[str, str]) -> frozenset[str]:
    """A JSON schema property as the TypeScript alternatives that describe it."""
    if "anyOf" in prop:
        return frozenset().union(*(schema_type(p, names) for p in prop["anyOf"]))
    if "$ref" in prop:
        return frozenset({names[prop["$ref"].rsplit("/", 1)[1]]})
    kinds = prop.get("type")
    if kinds is None:
        return frozenset({"unknown"})
    out = set()
    for kind in kinds if isinstance(kinds, list) else [kinds]:
        if kind in ("integer", "number"):
            out.add("number")
        elif kind == "array":
            (inner,) = schema_type(prop.get("items", {}), names)
            out.add(f"{inner}[]")
        elif kind == "object":
            extra = prop.get("additionalProperties", True)
            (inner,) = schema_type(extra, names) if isinstance(extra, dict) else {"unknown"}
            out.add(f"Record<string, {inner}>")
        else:
            out.add(kind)  # string, boolean, null
    return frozenset(out)


def model_fields(model: type, names: dict[str, str]) -> dict[str, frozenset[str]]:
    schema = model.model_json_schema(mode="serialization")
    return {k: schema_type(v, names) for k, v in schema["properties"].items()}


INTERFACES = ts_interfaces()
TS_NAMES = {m.__name__: ts for m, ts in RESPONSES.items()}


@pytest.mark.parametrize("model", list(RESPONSES), ids=lambda m: m.__name__)
def test_the_sidebar_declares_each_response_as_the_server_sends_it(model):
    interface = RESPONSES[model]
    assert interface in INTERFACES, f"no `export interface {interface}` in {SRC}"
    ts = {k: ts_type(v) for k, v in INTERFACES[interface].items()}
    py = model_fields(model, TS_NAMES)
    assert sorted(ts) == sorted(py), f"fields of {interface} (TS) vs {model.__name__} (models.py)"
    differ = {k: (sorted(ts[k]), sorted(py[k])) for k in py if ts[k] != py[k]}
    assert differ == {}, f"types of {interface} (TS) vs {model.__name__} (models.py)"


def test_the_sidebar_declares_the_run_state_event_as_its_schema_says():
    schema = json.loads(EVENT_SCHEMA.read_text(encoding="utf-8"))
    py = {k: schema_type(v, {}) for k, v in schema["properties"].items()}
    ts = {k: ts_type(v) for k, v in INTERFACES[EVENT_INTERFACE].items()}
    assert sorted(ts) == sorted(py)
    assert {k: sorted(ts[k]) for k in ts} == {k: sorted(py[k]) for k in py}


def test_a_field_only_one_side_has_is_caught(tmp_path):
    (tmp_path / "x.ts").write_text(
        "/** A backend. */\nexport interface IBackend {\n  name: string;\n"
        "  available: boolean; // why not\n  reason: string;\n  since?: number | null;\n}\n"
    )
    ts = {k: ts_type(v) for k, v in ts_interfaces(tmp_path)["IBackend"].items()}
    py = model_fields(models.DescribeBackend, {})
    assert set(ts) - set(py) == {"since"}
    assert ts["since"] == frozenset({"number", "null"})


def test_typescript_types_are_read_as_the_schema_writes_them():
    assert ts_type("'error' | 'warning' | string") == {"string"}
    assert ts_type("Record<string, Record<string, unknown>>") == {
        "Record<string, Record<string, unknown>>"
    }
    assert ts_type("IStepStatus[] | null") == {"IStepStatus[]", "null"}


#: ApiClient method (labextension/src/api.ts) -> the request model its body must fit.
REQUESTS = {
    "compile": models.CompileRequest,
    "split": models.SplitRequest,
    "createRun": models.CreateRun,
    "resume": models.ResumeRun,
}


def ts_request_bodies(api: Path = SRC / "api.ts") -> dict[str, set[str]]:
    """The keys of the ``JSON.stringify({...})`` body each ApiClient method sends."""
    text = _strip_comments(api.read_text(encoding="utf-8"))
    out = {}
    for m in re.finditer(r"\n  (\w+)\([^;]*?JSON\.stringify\(\{([^}]*)\}\)", text):
        if "\n  }" in text[m.start() + 1 : m.end()]:
            continue  # the match ran across the end of another method
        out[m.group(1)] = {k.split(":")[0].strip() for k in m.group(2).split(",") if k.strip()}
    return out


def test_every_body_the_sidebar_posts_has_its_model_here():
    assert sorted(ts_request_bodies()) == sorted(REQUESTS)


@pytest.mark.parametrize("method", list(REQUESTS))
def test_the_sidebar_sends_bodies_the_server_accepts(method):
    model = REQUESTS[method]
    sent = ts_request_bodies()[method]
    fields = model.model_fields
    assert sent - set(fields) == set(), f"{method} sends fields {model.__name__} forbids"
    required = {k for k, f in fields.items() if f.is_required()}
    assert required - sent == set(), f"{method} leaves out fields {model.__name__} requires"
