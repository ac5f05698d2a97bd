"""Shared field types for request bodies and tool arguments.

JSON has real numbers and booleans, so a body that sends `true` or `"3"` where a number belongs made a
mistake: pydantic's default (lax) mode would quietly read them as 1 and 3. These types refuse them, and
the error names the field. Use them for every number field of a model in models.py.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Strict

# An integer that must be a JSON integer: not a boolean, a string, or a float (even 3.0).
StrictInt = Annotated[int, Strict()]
# A number that must be a JSON number (an integer is fine): not a boolean or a string.
StrictFloat = Annotated[float, Strict()]

__all__ = ["StrictFloat", "StrictInt"]
