"""Structural validation of every write against the FHIR R4 model.

fhir.resources (pydantic models) does the work.  Its R4B package is used: R4B is a
technical correction of R4 with the same structure for every clinical resource
phiguard stores.  Error messages are rebuilt from the location and the rule only,
never from the input value, so a rejected write cannot echo PHI into an error or a
log.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from phiguard.errors import InvalidResource

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_ELEMENT = re.compile(r"^(?:[a-z][A-Za-z0-9]{0,63}|[0-9]{1,6})$")


@cache
def _model(resource_type: str) -> Any:
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError):
        return None


def known_type(resource_type: str) -> bool:
    return bool(resource_type) and resource_type[0].isupper() and _model(resource_type) is not None


def valid_id(rid: str) -> bool:
    return bool(_ID.match(rid))


def validate(resource: Any, expected_type: str | None = None) -> dict[str, Any]:
    """Check ``resource``; return it unchanged or raise ``InvalidResource``."""
    if not isinstance(resource, dict):
        raise InvalidResource("the body is not a FHIR resource (a JSON object was expected)")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise InvalidResource("the resource has no resourceType")
    if expected_type is not None and rtype != expected_type:
        raise InvalidResource(
            f"resourceType {rtype} does not match the endpoint's type {expected_type}"
        )
    model = _model(rtype) if known_type(rtype) else None
    if model is None or (rtype == "Bundle" and expected_type is None):
        raise InvalidResource(f"unsupported resource type: {rtype[:64]}")
    rid = resource.get("id")
    if rid is not None and (not isinstance(rid, str) or not valid_id(rid)):
        raise InvalidResource("the resource id is not a valid FHIR id")
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_input=False, include_url=False, include_context=False):
            parts = [str(p) for p in err.get("loc", ()) if p != "__root__"]
            if err.get("type") == "extra_forbidden" and parts:
                # The unknown key is client text (it could be anything, PHI included):
                # name only where it sits.
                parts, msg = parts[:-1], "has an element FHIR does not define"
            else:
                msg = str(err.get("msg", "invalid"))
            parts = [p if _ELEMENT.match(p) else "?" for p in parts]
            loc = ".".join(parts)
            issues.append(f"{rtype}.{loc}: {msg}" if loc else f"{rtype}: {msg}")
        raise InvalidResource(f"{rtype} failed validation", issues[:20]) from None
    except (ValueError, TypeError) as exc:  # validators that raise outside pydantic
        raise InvalidResource(f"{rtype} failed validation: {type(exc).__name__}") from None
    return resource
