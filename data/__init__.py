"""The contract layer: reading, validating, pseudonymising and storing events; the synthetic bank."""
