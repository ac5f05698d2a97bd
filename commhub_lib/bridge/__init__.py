"""The A2A client (docs/a2a-client.md): tasks sent to an alias bound to an external A2A agent are forwarded to it
by one background job (forwarder.run_bridge), through a small JSON-RPC client (client.py)."""
