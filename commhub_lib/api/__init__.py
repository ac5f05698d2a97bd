"""REST routes: thin handlers that parse, call the service, and return JSON."""
