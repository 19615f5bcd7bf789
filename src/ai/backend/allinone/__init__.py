"""All-in-one launcher: one manager and one agent on this machine, with state under one directory."""
