"""The ``duanka`` command line: each verb parses its options, runs one room's job and prints.

:mod:`cli.app` assembles the verbs; one module per family of verbs (data, training,
quickstart, scoring, keys, audit, config). Verb and option names, defaults, help texts,
exit codes and printed lines are the contract users script against (README, docs).
"""
