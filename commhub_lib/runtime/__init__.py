"""How the process is run and tuned: the server lifecycle (server.py), the fixes to hypercorn installed when it
starts (patches.py), garbage-collector and glibc heap settings (gc_tuning.py, malloc_tuning.py), the event-loop
stall log (stalls.py) and the log set-up (log_setup.py).

Nothing here is a domain rule; the endpoints and the service never import this package (only `cli/serve.py`,
which starts the server, does)."""
