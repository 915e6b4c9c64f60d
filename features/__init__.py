"""Point-in-time feature definitions and their two evaluators: the offline builder and the online state."""
