"""Structured outputs: constrain sampling to a JSON schema, a regex, a choice or a grammar (xgrammar)."""

from tokenmill.structured_output.params import StructuredOutputsParams

__all__ = ["StructuredOutputsParams"]
