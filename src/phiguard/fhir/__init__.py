"""The FHIR R4 REST surface at ``/fhir``: routes, bundles, CapabilityStatement, errors."""
