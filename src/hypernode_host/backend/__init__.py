"""The reference backend: the project's stand-in for the Hypernode backend, which is not public.

The test peer of every bridge test and the demo's default: upstream's message set and error texts
(server.py, over the records of records.py), job submission (submit.py), an Oracle that checks each
result's proofs (oracle.py), and a thread harness for tests and the demo (harness.py).
"""
