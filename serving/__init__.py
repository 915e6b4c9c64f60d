"""Serving: the scorer, batch scoring, the HTTP service, API keys, audit, and the command line."""
