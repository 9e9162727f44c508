"""Schemathesis hooks for scripts/test-api.

Two rules of the REST API join two parts of a request, which OpenAPI cannot
state (each part is described alone); the document says both in words. A
request schemathesis generates as valid may break them, and the server then
rightly answers 400. These hooks make such generated requests keep the
rules, so that "valid data is accepted" is checked on everything else:

- The tenant may be named in the query (`?tenant=`) and in the body (`tenant`,
  in each event of a batch); when both are given they must agree.
- An event whose `type` is one of the event catalog's must carry `data`
  matching the catalog's JSON Schema of that type; the document leaves
  `data` an open object (the catalog's schemas live in docs/protocol.md and
  docs/asyncapi.yaml). Generated valid requests with a catalog type are
  given a type outside the catalog instead.

Only requests generated as valid are changed: changing an invalid one could
make it valid by accident.
"""

import schemathesis
from schemathesis import GenerationMode

# A type outside the catalog: published as is when NOVA_STRICT_EVENTS is off.
OTHER_TYPE = "schemathesis.probe"


def _catalog_types(case):
    schema = case.operation.schema.raw_schema
    any_of = schema["components"]["schemas"]["EventType"]["anyOf"]
    return {t for branch in any_of for t in branch.get("enum", [])}


def _events(body):
    if not isinstance(body, dict):
        return []
    if isinstance(body.get("events"), list):
        return [e for e in body["events"] if isinstance(e, dict)]
    return [body]


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return case
    events = _events(case.body)
    if not events:
        return case
    catalog = _catalog_types(case)
    query_tenant = (case.query or {}).get("tenant")
    for event in events:
        if event.get("type") in catalog:
            event["type"] = OTHER_TYPE
        if query_tenant is not None and event.get("tenant") not in (None, query_tenant):
            event["tenant"] = query_tenant
    return case
