"""A synthetic bank in the input contract's format, for development, tests and demos.

``generate_bank`` writes ``applications.csv`` and ``labels.csv`` exactly as a bank's
export would look, and ``truth.csv`` (scheme and group of every application) for
evaluation only: duanka never reads it as an input.
"""

from data.synthetic.bank import GeneratedBank, generate_bank

__all__ = ["GeneratedBank", "generate_bank"]
