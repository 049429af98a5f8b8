"""The azure-batch SDK's own test suite, run unchanged against the local Batch service (`make conformance`)."""
