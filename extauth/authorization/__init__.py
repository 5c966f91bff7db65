"""Authorization: policy files (`apiVersion: extauth/v1`) compiled once into a fast evaluator."""
