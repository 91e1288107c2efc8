"""The Python client of the dataset-audit service and the API's models.

    from dataset_audit import AuditClient

A package of its own, apart from the server's ``app``, so that a project with an ``app`` package
of its own can import it.
"""

from dataset_audit.client import AuditClient, AuditClientError
from dataset_audit.schemas import AuditRead, AuditStatus, FlaggedItem

__all__ = ["AuditClient", "AuditClientError", "AuditRead", "AuditStatus", "FlaggedItem"]
