"""The container runtime: a CRI-shaped daemon (``minikube-py runtime``) that pulls OCI images and runs
containers with runc in pods networked by CNI, and the client the kubelet talks to it with.

The error types live here because both sides use them: the daemon raises them and answers
``{"error": {"code", "message"}}``; the client raises the same class again from that answer.
Importing this package stays cheap (the per-container shim imports it).
"""

from __future__ import annotations


class RuntimeServiceError(RuntimeError):
    """A call the runtime refused or could not finish; ``code`` says which kind, as gRPC codes do in CRI."""

    code = "Internal"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(RuntimeServiceError):
    code = "NotFound"
    http_status = 404


class InvalidArgumentError(RuntimeServiceError):
    code = "InvalidArgument"
    http_status = 400


class UnavailableError(RuntimeServiceError):
    """A binary or service the call needs is missing (runc, a CNI plugin, the image store)."""

    code = "Unavailable"
    http_status = 503


class InternalError(RuntimeServiceError):
    code = "Internal"
    http_status = 500


class DeadlineExceededError(RuntimeServiceError):
    """ExecSync's command outlived its timeout (CRI answers DeadlineExceeded; probes count it as failed)."""

    code = "DeadlineExceeded"
    http_status = 504


ERRORS_BY_CODE: dict[str, type[RuntimeServiceError]] = {
    cls.code: cls for cls in (NotFoundError, InvalidArgumentError, UnavailableError, InternalError,
                              DeadlineExceededError)
}

__all__ = ["ERRORS_BY_CODE", "DeadlineExceededError", "InternalError", "InvalidArgumentError", "NotFoundError",
           "RuntimeServiceError", "UnavailableError"]
