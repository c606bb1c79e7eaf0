"""The web console (``/console/`` on the agent listener): pages, sessions, live view in the browser."""
