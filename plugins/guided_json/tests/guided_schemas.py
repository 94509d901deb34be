"""JSON schemas the guided tests generate for: nesting, arrays, enums, numbers, patterns, optional fields.

Strings and arrays are bounded so that random-weight models, which rarely pick a closing quote by
chance, still finish within the token budget.
"""

SCHEMAS = {
    "flat": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 6}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    },
    "nested": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {"id": {"type": "integer"}, "active": {"type": "boolean"}},
                "required": ["id", "active"],
            },
            "note": {"type": ["string", "null"], "maxLength": 4},
        },
        "required": ["user", "note"],
    },
    "array": {
        "type": "object",
        "properties": {"scores": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 3}},
        "required": ["scores"],
    },
    "enum": {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "light blue"]}, "size": {"const": 3}},
        "required": ["color", "size"],
    },
    "pattern": {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"}},
        "required": ["code"],
    },
    "optional": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 5},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
            "rating": {"type": "number"},
        },
        "required": ["title"],
    },
    "top-level-array": {"type": "array", "items": {"type": "integer"}, "maxItems": 4},
}

REGEXES = [r"[a-z]{2,5}-\d{2}", r"(yes|no)!", r"\d+(\.\d{1,2})?"]
CHOICES = ["positive", "negative", "neutral ok"]
