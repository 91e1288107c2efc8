"""The dataset-auditing service: HTTP API, persistence, storage, client and command line."""
