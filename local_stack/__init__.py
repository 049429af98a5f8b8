"""The local embedded stack: Azurite, our Batch service and our Azure ML endpoint, plus the demo.

Not part of the product: the production image (Dockerfile) copies dags/, plugins/ and include/
only. Every behaviour the product relies on follows a public source, recorded in the conformance
tables of batch_service/README.md and aml_service/README.md.
"""
