"""Security of the API server: authentication, RBAC, the Node authorizer, ServiceAccount tokens,
encryption at rest — against real API server processes."""
