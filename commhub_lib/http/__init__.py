"""The one HTTP pipeline: the route table, the request reader, errors to answers, the access line, the write-lock
wrapper, and the Quart app and ASGI dispatch made from them (docs/development.md, "Layout")."""
